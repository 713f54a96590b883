import numpy as np
import pytest

from pruning.tasks import DataError, TASKS, get_task, load_split, metrics
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
    read = load_split(get_task(task), split, GLUE)
    examples = read.examples
    assert len(examples) == COUNTS[(task, split)] == read.rows and read.skipped == 0
    t = get_task(task)
    assert (examples[0].text_b is None) == (len(t.text) == 1)
    if split == "dev" and task in DEV_POSITIVES:
        cls, count = DEV_POSITIVES[task]
        assert sum(e.label == cls for e in examples) == count


@needs_shared
def test_quirks_bom_stray_quotes_and_floats():
    mrpc = load_split(get_task("mrpc"), "dev", GLUE).examples
    assert mrpc[0].text_b.startswith('" The foodservice')  # quoting disabled: the quote stays
    stsb = load_split(get_task("stsb"), "dev", GLUE).examples
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


def test_metrics_of_degenerate_dev_sets_are_defined_and_silent():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sklearn and scipy warn on these; the user should not see it
        one_class = metrics(get_task("mrpc"), np.array([[0.0, 1.0], [0.0, 2.0]]), np.array([1, 1]))
        assert one_class == {"accuracy": 1.0, "mcc": 0.0, "f1": 1.0}
        assert metrics(get_task("mrpc"), np.array([[1.0, 0.0]]), np.array([1]))["f1"] == 0.0
        # a constant prediction, or constant labels, carry no information: 0, not NaN
        constant = metrics(get_task("stsb"), np.array([[2.0], [2.0], [2.0]]), np.array([1.0, 2.0, 4.0]))
        assert constant == {"pearson": 0.0, "spearman": 0.0}
        assert metrics(get_task("stsb"), np.array([[1.0], [3.0]]), np.array([2.0, 2.0]))["spearman"] == 0.0


def write_split(root, folder, text: bytes, name="dev.tsv"):
    (root / folder).mkdir(parents=True, exist_ok=True)
    (root / folder / name).write_bytes(text)


def test_a_few_bad_rows_are_counted_not_hidden(tmp_path):
    rows = "".join(f"sentence {i}\t{i % 2}\n" for i in range(100))
    write_split(tmp_path, "SST-2", ("sentence\tlabel\n" + rows + "short row\nodd\t7\n").encode())
    read = load_split(get_task("sst2"), "dev", tmp_path)
    assert (read.rows, read.skipped, len(read.examples)) == (102, 2, 100)
    assert "skipped 2 of 102 rows" in read.note() and "line 102: 1 columns, 2 needed" in read.note()


@pytest.mark.parametrize("task, folder, text, needle", [
    ("sst2", "SST-2", b"", "is empty"),
    ("sst2", "SST-2", b"sentence\tlabel\n", "has no data rows"),
    ("sst2", "SST-2", b"sentence\tlabel\nfine\t1\ncaf\xe9\t0\n", "not UTF-8 text (line 3"),
    ("sst2", "SST-2", b"text\tlabel\na\t1\n", "does not have the sst2 columns"),
    ("sst2", "SST-2", b"sentence\tlabel\n" + b"a\tpositive\n" * 20, "20 of 20 rows cannot be read"),
    ("stsb", "STS-B", b"sentence1\tsentence2\tscore\n" + b"a\tb\t2.5\n" * 10 + b"a\tb\tN/A\n",
     "1 of 11 rows cannot be read as stsb (first: line 12: score 'N/A' is not a number)"),
    ("stsb", "STS-B", b"sentence1\tsentence2\tscore\n" + b"a\tb\tnan\n" * 3, "score 'nan' is not a number"),
])
def test_unreadable_data_is_one_clear_error(tmp_path, task, folder, text, needle):
    write_split(tmp_path, folder, text)
    with pytest.raises(DataError) as e:
        load_split(get_task(task), "dev", tmp_path)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_trivial_baseline_is_the_best_constant_prediction():
    import torch
    sst2, stsb, cola = get_task("sst2"), get_task("stsb"), get_task("cola")
    batches = [{"labels": torch.tensor([1, 1, 0])}, {"labels": torch.tensor([1, 0])}]
    assert sst2.trivial(batches) == pytest.approx(3 / 5)  # always "positive"
    assert cola.trivial(batches) == 0.0  # MCC of a constant is 0
    assert stsb.trivial([{"labels": torch.tensor([1.0, 2.0])}]) == 0.0  # a constant correlates with nothing


def test_a_collapsed_model_is_reported_not_shipped_silently():
    import torch

    from pruning.pipeline import PruneOptions, _collapse_warning
    batches = [{"labels": torch.tensor([1, 1, 0, 1])}]
    opts = PruneOptions(out="x", target=0.88)
    dense = {"accuracy": 0.95}
    warned = _collapse_warning(get_task("sst2"), batches, dense, {"accuracy": 0.75}, opts)
    assert len(warned) == 1 and "collapsed" in warned[0] and "--finetune-epochs 3" in warned[0]
    assert _collapse_warning(get_task("sst2"), batches, dense, {"accuracy": 0.9}, opts) == []
    # above the constant's 0.75, but with 0.84 only 45 % of the dense model's lead of 0.20 is left
    warned = _collapse_warning(get_task("sst2"), batches, dense, {"accuracy": 0.84}, opts)
    assert len(warned) == 1 and "keeps 45%" in warned[0] and "--lr 1e-4" in warned[0]
    assert _collapse_warning(get_task("sst2"), batches, dense, {"accuracy": 0.86}, opts) == []
    # a dense model at the constant's level has nothing pruning could lose: the warning says that instead
    warned = _collapse_warning(get_task("sst2"), batches, {"accuracy": 0.76}, {"accuracy": 0.5}, opts)
    assert len(warned) == 1 and "dense model's accuracy 0.7600 is already no better" in warned[0]
    assert "collapsed" not in warned[0]
    # regression: STS-B at 0.88 with the CPU budget kept Spearman 0.138 of the dense 0.862
    stsb = [{"labels": torch.tensor([1.0, 4.0])}]
    warned = _collapse_warning(get_task("stsb"), stsb, {"spearman": 0.862}, {"spearman": 0.138}, opts)
    assert len(warned) == 1 and "keeps 16%" in warned[0] and "constant prediction" in warned[0]
    assert "collapsed" in _collapse_warning(get_task("stsb"), stsb, {"spearman": 0.862}, {"spearman": 0.01}, opts)[0]
    assert _collapse_warning(get_task("stsb"), stsb, {"spearman": 0.862}, {"spearman": 0.85}, opts) == []


@pytest.mark.parametrize("which", ["glue", "squad"])
def test_unreachable_hub_says_where_local_data_would_go(monkeypatch, caplog, which):
    import datasets
    from huggingface_hub.utils import logging as hub_logging

    from pruning import squad

    def offline(*args, **kwargs):
        hub_logging.get_logger("huggingface_hub.utils._http").warning("Retrying in 1s [Retry 1/5].")
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub\n(LocalEntryNotFoundError)")
    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError) as e:
        if which == "glue":
            from pruning.tasks import _from_hub
            _from_hub(get_task("sst2"), "validation")
        else:
            squad._from_hub("rajpurkar/squad", False)
    text = str(e.value)
    assert text.startswith(f"no local {'GLUE' if which == 'glue' else 'SQuAD'} data found (give --glue-dir or set "
                           "PGB_GLUE_DIR), and could not load ")
    assert "\n" not in text and text.endswith("on the Hub (LocalEntryNotFoundError)")
    assert "Retrying" not in caplog.text  # the client's retry lines are not printed before ours
    assert hub_logging.get_verbosity() == hub_logging.WARNING
