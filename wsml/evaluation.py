"""Scoring a split (every sample exactly once, also under DDP), image files, and a finished run for eval/predict.

Under torchrun each process scores its share of the split (DistributedSampler pads the shares to equal
length by repeating a few samples); :func:`predict_split` gathers (row id, scores) from every process and
keeps one copy per row id, so mAP counts every sample exactly once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch

from wsml._types import PathLike
from wsml.runs import RunFolder


@torch.no_grad()
def predict_split(forward: Callable, loader, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Sigmoid scores float32 [N, C] and row ids int64 [N] of the loader's split, sorted by row id, de-duplicated.

    Always computed in fp32 with autocast off, whatever ``train.amp`` the model was trained with (the reference
    code bases evaluate in fp32; bf16 scores tie and reorder close scores, which changes AP).
    """
    from wsml.distributed import all_gather_rows

    scores, rows = [], []
    for batch in loader:
        if batch is None:  # every image of the batch failed to load (on_bad_image="skip")
            continue
        with torch.autocast(device_type=device.type, enabled=False):
            logits = forward(batch["input"].to(device, non_blocking=True))
        scores.append(torch.sigmoid(logits.float()).cpu())
        rows.append(torch.as_tensor(np.asarray(batch["index"], dtype=np.int64)))
    all_s, sizes = all_gather_rows(torch.cat(scores) if scores else torch.empty((0, 0)))  # every rank's rows
    if not sum(sizes):
        raise ValueError("no sample of the split could be scored (all images failed to load?)")
    all_r, _ = all_gather_rows(torch.cat(rows) if rows else torch.empty((0,), dtype=torch.long), sizes=sizes)
    all_s, all_r = all_s.numpy(), all_r.numpy()
    uniq, first = np.unique(all_r, return_index=True)  # sorted row ids, first copy of each
    return all_s[first].astype(np.float32), uniq


def targets_at(split, rows: np.ndarray) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """The split's evaluation targets at ``rows``: (labels {0,1}, mask of the entries that count or None)."""
    labels, mask = split.eval_targets()
    return np.asarray(labels[rows]), None if mask is None else np.asarray(mask[rows])


def split_map(split, scores: np.ndarray, rows: np.ndarray) -> float:
    """mAP ×100 of the scored rows against the split's evaluation targets (full labels, or masked observed)."""
    from wsml.metrics import mean_average_precision

    return mean_average_precision(scores, *targets_at(split, rows))


def split_classes_left_out(split, rows: np.ndarray) -> int:
    """Classes the reproduction mAP policy leaves out on these rows (no annotated entry; 0 without a mask)."""
    from wsml.metrics import classes_left_out

    labels, mask = targets_at(split, rows)
    return classes_left_out(mask, labels.shape[1])


def split_group_map(index, split: str, scores: np.ndarray, rows: np.ndarray) -> Optional[dict]:
    """OpenImages-style mAP per class group (paper Table 3: 5 groups by how many training images have the class
    annotated, ``index.meta["known_per_class"]``); None for data sets without that information."""
    known = index.meta.get("known_per_class")
    if known is None:
        return None
    from wsml.metrics import group_mean_average_precision

    labels, mask = targets_at(index[split], rows)
    return group_mean_average_precision(scores, labels, np.asarray(known), mask=mask)


def save_predictions(path: PathLike, scores: np.ndarray, rows: np.ndarray, class_names: Sequence[str]) -> None:
    """``predictions_<split>.npz``: scores [N, C] (sigmoid), rows [N] (split row ids), class_names [C]."""
    import io

    from wsml.checkpoint import atomic_write

    buf = io.BytesIO()
    np.savez(buf, scores=scores, rows=rows, class_names=np.asarray(list(class_names)))
    atomic_write(path, lambda f: f.write(buf.getvalue()))


# ------------------------------------------------------------------------------------------ finished runs


def run_split_scores(run: RunFolder, split: str, device: Union[str, torch.device] = "auto",
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(scores [N, C], row ids [N]) of the run's best checkpoint on one split of its data set."""
    model = run.model(device)
    return predict_split(model, run.loader(split, model), next(model.parameters()).device)


DENSE_PREDICTIONS = 2**27  # N × C up to which scores travel as arrays and predictions_<split>.npz is written


def too_large(num_rows: int, num_classes: int) -> bool:
    """True when a split's N × C scores are above ``DENSE_PREDICTIONS``: scored to chunk files, evaluated blocked."""
    return num_rows * num_classes > DENSE_PREDICTIONS


def scores_on_main(forward: Callable, loader, device: torch.device, run_dir: PathLike, split: str, num_classes: int,
                   dist, use: Callable):
    """Every process scores its shard of ``loader`` into one scratch folder inside the run folder (no N × C
    gather), then rank 0 computes ``use(ScoreChunks)``; its result, or its ValueError, reaches every rank. The
    folder is removed afterwards unless ``use`` moved it away (the final test pass keeps its chunks)."""
    import shutil
    import tempfile

    from wsml.distributed import barrier, broadcast_object
    from wsml.metrics_blocked import ScoreChunks, score_to_chunks

    tmp = broadcast_object(tempfile.mkdtemp(prefix=f".scores_{split}_", dir=run_dir) if dist.is_main else None)
    out = error = None
    try:
        score_to_chunks(forward, loader, device, tmp, num_classes, dist.rank)
        barrier()
        if dist.is_main:
            try:
                try:
                    store = ScoreChunks(tmp)
                except FileNotFoundError:
                    raise ValueError("no sample of the split could be scored (all images failed to load?)") from None
                out = use(store)
            except (ValueError, OSError) as e:
                error = e  # handed to every rank: none waits for a result that will not come
    finally:
        if dist.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
    out, error = broadcast_object((out, error))
    if error is not None:
        raise error
    return out


def evaluate_run(run: Union[RunFolder, PathLike], split: str = "test", device: str = "auto", write: bool = True,
                 ) -> tuple[dict, Optional[np.ndarray], Optional[np.ndarray]]:
    """(result, scores, rows): mAP of the run's best checkpoint on ``split`` with the arrays it was computed from;
    ``write`` saves ``predictions_<split>.npz`` and ``eval_<split>.json`` into the run folder.

    Scores go to disk in chunks as they come and the metrics are computed a block of classes at a time
    (:mod:`wsml.metrics_blocked`: identical to the dense computation, memory bounded). Under torchrun every
    process scores its shard and writes its own chunks; rank 0 evaluates from disk (no N × C gather). Above
    ``DENSE_PREDICTIONS`` scores, (scores, rows) are None and the scores stay in ``predictions_<split>.chunks/``.
    """
    from wsml.distributed import init_distributed
    from wsml.train.builders import resolve_device

    run = RunFolder.of(run)
    info = init_distributed(device)
    dev = resolve_device(device, info) if isinstance(device, str) else device
    model = run.model(dev)
    loader = run.loader(split, model, info)  # this process's shard
    return scores_on_main(model, loader, dev, run.path, split, run.dataset.num_classes, info,
                          lambda store: _evaluate_chunks(run, split, store, write))


def keep_chunks(folder: PathLike, run_dir: PathLike, split: str) -> Path:
    """Move a split's score chunks to ``predictions_<split>.chunks/``, replacing older chunks and a dense .npz."""
    import shutil

    keep = Path(run_dir) / f"predictions_{split}.chunks"
    shutil.rmtree(keep, ignore_errors=True)
    (Path(run_dir) / f"predictions_{split}.npz").unlink(missing_ok=True)  # no older dense file beside the chunks
    Path(folder).rename(keep)
    return keep


def _evaluate_chunks(run: RunFolder, split: str, store, write: bool) -> tuple:
    """:func:`evaluate_run`'s (result, scores, rows) from the score chunks in ``store`` (rank 0)."""
    import shutil

    from wsml.checkpoint import write_json
    from wsml.metrics_blocked import score_split_blocked

    index = run.dataset
    result = {"split": split, **score_split_blocked(index, split, store), "num_samples": int(len(store.rows)),
              "checkpoint_epoch": int(run.checkpoint().get("epoch", 0))}  # partial own-data labels: their policy
    group_map = result.pop("group_map", None)
    if group_map is not None:
        result["group_map"] = group_map  # after the other fields, as before
    small = not too_large(len(store.rows), store.num_classes)
    scores, rows = (store.to_dense(), store.rows) if small else (None, None)
    if write:
        if small:
            save_predictions(run.file(f"predictions_{split}.npz"), scores, rows, index.class_names)
            shutil.rmtree(run.file(f"predictions_{split}.chunks"), ignore_errors=True)  # of a larger evaluation
        else:
            chunks = keep_chunks(store.folder, run.path, split)
            result["predictions"] = (f"{chunks.name}/ (N x C = {len(store.rows)} x {store.num_classes} is too "
                                     "large for one .npz; read it with wsml.metrics_blocked.ScoreChunks)")
        write_json(run.file(f"eval_{split}.json"), result)
    return result, scores, rows


def score_images(model: torch.nn.Module, paths: Sequence[PathLike], transform: Callable, channels: int = 3,
                 ) -> np.ndarray:
    """float32 [N, C] sigmoid scores of image files, one image at a time, in fp32 (the one image scorer:
    ``wsml predict``'s CSV/JSON and ``wsml review`` format its output)."""
    out = list(iter_image_scores(model, paths, transform, channels))
    return np.stack(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)


def iter_image_scores(model: torch.nn.Module, paths: Sequence[PathLike], transform: Callable, channels: int = 3,
                      skipped: Optional[list] = None):
    """:func:`score_images` one image at a time, as each is scored (``wsml predict`` streams its output).

    With a ``skipped`` list, an unreadable image yields None and its error line goes into the list (a folder of
    100 000 images is not stopped by one bad file); without one, it raises.
    """
    from wsml.data.loading import load_image

    dev = next(model.parameters()).device
    for p in paths:
        try:
            image = load_image(str(p), channels)
        except (ValueError, FileNotFoundError) as e:
            if skipped is None:
                raise
            skipped.append(str(e))
            yield None
            continue
        with torch.no_grad():
            x = transform(image)[None].to(dev)
            scores = torch.sigmoid(model(x).float())[0].cpu().numpy()
        yield scores


def image_transform(run: RunFolder, model: torch.nn.Module) -> tuple[Callable, int]:
    """(eval transform, input channels) of ``model``, the run's image model; the checkpoint alone knows them."""
    from wsml.data.transforms import build_transform

    info = run.model_info()
    if info["kind"] != "images":
        raise ValueError(f"run {run.path} was trained on feature vectors; predict needs an image model")
    mean_std = model.default_mean_std
    ch = info["in_chans"]
    return build_transform(run.config.data.image_size, False, *(mean_std or (None, None)), channels=ch), ch
