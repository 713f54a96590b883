import numpy as np
import pytest

from pgb_export.tasks import DataError, TASKS, get_task, load_split, metrics
from tests.conftest import GLUE, needs_shared

# Row counts and label splits from ../shared/data/glue/DATA.md (the official ones).
COUNTS = {("sst2", "train"): 67349, ("sst2", "dev"): 872, ("mrpc", "train"): 3668,
          ("mrpc", "dev"): 408, ("rte", "train"): 2490, ("rte", "dev"): 277,
          ("cola", "train"): 8551, ("cola", "dev"): 1043, ("stsb", "train"): 5749,
          ("stsb", "dev"): 1500, ("qnli", "dev"): 5463, ("wnli", "train"): 635, ("wnli", "dev"): 71}
DEV_POSITIVES = {"sst2": (1, 444), "mrpc": (1, 279), "rte": (0, 146), "cola": (1, 721),
                 "qnli": (0, 2702), "wnli": (1, 31)}


@needs_shared
@pytest.mark.parametrize("task, split", sorted(COUNTS))
def test_local_tsvs_read_with_official_counts(task, split):
    examples = load_split(get_task(task), split, GLUE)
    assert len(examples) == COUNTS[(task, split)]
    t = get_task(task)
    assert (examples[0].text_b is None) == (len(t.text) == 1)
    if split == "dev" and task in DEV_POSITIVES:
        cls, count = DEV_POSITIVES[task]
        assert sum(e.label == cls for e in examples) == count


@needs_shared
def test_quirks_bom_stray_quotes_and_floats():
    mrpc = load_split(get_task("mrpc"), "dev", GLUE)
    assert mrpc[0].text_b.startswith('" The foodservice')  # quoting disabled: the quote stays
    stsb = load_split(get_task("stsb"), "dev", GLUE)
    assert isinstance(stsb[0].label, float) and stsb[0].label == 5.0


def test_missing_data_and_unknown_task(tmp_path):
    with pytest.raises(DataError, match="unknown task"):
        get_task("squad2")
    with pytest.raises(DataError, match="missing train data for rte"):
        load_split(get_task("rte"), "train", tmp_path)
    assert set(TASKS) == {"sst2", "mrpc", "rte", "cola", "stsb", "qnli", "qqp", "mnli", "wnli"}


def test_metrics_match_hand_computed_values():
    logits = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.0, 1.0]])  # predicts 0, 1, 0, 1
    m = metrics(get_task("mrpc"), logits, np.array([0, 1, 1, 1]))
    assert m["accuracy"] == 0.75
    assert m["f1"] == pytest.approx(0.8)  # tp 2, fp 0, fn 1
    assert m["mcc"] == pytest.approx(1 / np.sqrt(3))
    r = metrics(get_task("stsb"), np.array([[1.0], [2.0], [3.0]]), np.array([1.0, 2.0, 4.0]))
    assert r["spearman"] == pytest.approx(1.0)
    assert r["pearson"] == pytest.approx(0.9819805)
