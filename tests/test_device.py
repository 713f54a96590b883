"""pgb-prune's steps on a CUDA GPU (--device): they must compute what they compute on the CPU,
up to floating-point order, and hand back CPU results (scores, predictions, the saved model).
The CUDA comparisons skip where torch sees no GPU; scripts/gpu_check.sh runs them on one."""
import numpy as np
import pytest
import torch

from pruning import bert, compensation, finetune, importance, layer_drop, repermute
from pruning.batching import on_device, predict
from pruning.distillation import attach_teacher
from pruning.pipeline import DeviceUnavailable, pick_device
from pruning.plan import uniform_plan
from tests.conftest import random_batches, tiny_bert

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to torch")


def test_pick_device():
    assert pick_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_device("cpu") == torch.device("cpu")
    for bad in ("gpu0", "", "cuda:x"):
        with pytest.raises(DeviceUnavailable, match="is not a device name"):
            pick_device(bad)
    with pytest.raises(DeviceUnavailable, match="only cpu and cuda"):
        pick_device("meta")
    with pytest.raises(DeviceUnavailable, match="asks for a CUDA GPU"):
        pick_device(f"cuda:{torch.cuda.device_count()}")


def test_on_device_moves_tensors_and_keeps_metadata():
    model = tiny_bert()
    batch = {**random_batches(1)[0], "example": ["a", "b", "c", "d"]}
    moved = on_device(model, batch)
    assert moved["example"] is batch["example"]
    assert all(moved[k].device == next(model.parameters()).device and torch.equal(moved[k], batch[k])
               for k in batch if k != "example")


@needs_cuda
def test_steps_on_cuda_match_the_cpu(device="cuda"):
    batches = random_batches(3)
    cpu, gpu = tiny_bert(), tiny_bert().to(device)
    refs = bert.matrices(cpu)

    s_cpu, s_gpu = importance.score(cpu, batches, progress=False), importance.score(gpu, batches, progress=False)
    for r in refs:
        assert s_gpu[r.name].device.type == "cpu"
        torch.testing.assert_close(s_gpu[r.name], s_cpu[r.name], rtol=1e-3, atol=1e-9)
    assert layer_drop.calibration_loss(gpu, batches) == pytest.approx(layer_drop.calibration_loss(cpu, batches), rel=1e-4)

    taught = attach_teacher(gpu, [{"input_ids": b["input_ids"][0].tolist(), "labels": 0} for b in batches])
    expected = attach_teacher(cpu, [{"input_ids": b["input_ids"][0].tolist(), "labels": 0} for b in batches])
    np.testing.assert_allclose([t["teacher_logits"] for t in taught], [t["teacher_logits"] for t in expected],
                               rtol=1e-4, atol=1e-5)

    masks = uniform_plan(refs, 2).masks()
    rep_cpu = compensation.compensate(cpu, masks, batches, progress=False)
    rep_gpu = compensation.compensate(gpu, masks, batches, progress=False)
    for r in refs:
        assert rep_gpu[r.name]["after"] == pytest.approx(rep_cpu[r.name]["after"], rel=1e-3, abs=1e-7)
    finetune.finetune(cpu, lambda e: batches, 1, 1e-3, masks, progress=False)
    finetune.finetune(gpu, lambda e: batches, 1, 1e-3, masks, progress=False)
    out_cpu, out_gpu = predict(cpu, batches), predict(gpu, batches)
    for a, b in zip(out_cpu, out_gpu):
        assert isinstance(b["logits"], np.ndarray)
        np.testing.assert_allclose(b["logits"], a["logits"], rtol=1e-3, atol=1e-4)
    assert repermute.violations(gpu.cpu(), uniform_plan(refs, 2)) == []  # blocks stayed blocks on the GPU
