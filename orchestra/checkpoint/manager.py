"""Orbax checkpoints of a training run, with atomic saves and automatic resume.

Layout: `<workdir>/checkpoints/<step>/` with one orbax item per named pytree
(e.g. `params`, `train_state`) plus `meta` (JSON: step, config, data-iterator
position, anything the loop needs). Orbax writes each step into a temporary
folder and renames it when complete, so a save killed halfway leaves the
previous step as the newest one; leftover temporary folders are removed the
next time a manager opens the workdir.

Pytrees are stored flat, as `{"path.to.leaf": array}`: restoring needs only a
live pytree of the same structure (`like=`), whose leaves' shapes, dtypes and
shardings say where each array lands, so any structure (NNX state, optax
state) and any mesh round-trips.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from orchestra.checkpoint.errors import CheckpointError, StepNotRestored
from orchestra.sharding.multihost import barrier, is_main

CHECKPOINT_SUBDIR = "checkpoints"
SFT_DIR = "sft"          # a training run's SFT-only policy: <workdir>/sft/checkpoints
META = "meta"


def _flatten(tree) -> tuple[dict[str, Any], Any, list[str]]:
  leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(tree)
  keys = [".".join(_key_name(k) for k in path) or "root" for path, _ in leaves_with_path]
  if len(set(keys)) != len(keys):
    raise CheckpointError("two leaves of the state flatten to the same name")
  return dict(zip(keys, (leaf for _, leaf in leaves_with_path))), treedef, keys


def _first_line(e: Exception) -> str:
  text = str(e).strip()
  return text.splitlines()[0][:500] if text else type(e).__name__


def _key_name(key) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _abstract(leaf):
  if isinstance(leaf, jax.Array):
    return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)
  return leaf


class CheckpointManager:
  """Saves and restores named pytrees plus JSON metadata under `workdir`.

  Args:
    workdir: the run's folder (checkpoints go to `workdir/checkpoints`).
    keep_last: how many most recent steps to keep.
    keep_every: also keep every step divisible by this (None: none extra).
    async_save: write in a background thread; `save` returns once the
      arrays are copied off the devices, so training may continue (and donate
      its buffers) at once.
    read_only: only read (export, evaluation): nothing is created, cleaned or
      written, and a missing checkpoint folder is an error at once.
  """

  def __init__(self, workdir: str | os.PathLike, *, keep_last: int = 3,
               keep_every: int | None = None, async_save: bool = True, read_only: bool = False):
    self.directory = os.path.join(os.path.abspath(os.fspath(workdir)), CHECKPOINT_SUBDIR)
    if read_only and not os.path.isdir(self.directory):
      raise CheckpointError(f"no complete checkpoint in {self.directory} (folder missing)")
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep_last, keep_period=keep_every, enable_async_checkpointing=async_save,
        cleanup_tmp_directories=not read_only, create=not read_only, read_only=read_only,
        save_root_metadata=not read_only)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    """Newest complete step, or None for a fresh workdir."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, items: dict[str, Any], metadata: dict[str, Any]) -> None:
    """Saves `items` (name -> pytree of arrays) and JSON `metadata` as `step`."""
    if META in items:
      raise ValueError(f"item name {META!r} is reserved for the metadata")
    args = {name: ocp.args.StandardSave(_flatten(tree)[0]) for name, tree in items.items()}
    args[META] = ocp.args.JsonSave({**metadata, "step": int(step)})
    self._manager.save(int(step), args=ocp.args.Composite(**args), force=True)

  def restore(self, like: dict[str, Any], step: int | None = None) -> tuple[dict[str, Any], dict]:
    """Restores the items named in `like` (and the metadata) of `step` (default newest).

    `like` maps item names to live pytrees of the wanted structure; each
    array leaf's shape, dtype and sharding decide where the restored array goes.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"no complete checkpoint in {self.directory}")
    if step not in self._manager.all_steps():
      raise CheckpointError(f"step {step} is not in {self.directory}; "
                            f"available: {self.all_steps()}")
    flat_like = {name: _flatten(tree) for name, tree in like.items()}
    args = {name: ocp.args.StandardRestore(jax.tree.map(_abstract, flat))
            for name, (flat, _, _) in flat_like.items()}
    args[META] = ocp.args.JsonRestore()
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(**args))
    except Exception as e:  # noqa: BLE001 - orbax raises bare Exception on unreadable data
      raise StepNotRestored(f"{self.directory}/{step} does not restore (damaged, or not the "
                            f"requested state): {type(e).__name__}: {_first_line(e)}",
                            step) from e
    items = {}
    for name, (like_flat, treedef, keys) in flat_like.items():
      flat = restored[name]
      # Orbax may hand back scalars on one device; put every leaf exactly where its twin lives.
      leaves = [jax.device_put(flat[k], like_flat[k].sharding)
                if isinstance(like_flat[k], jax.Array) else flat[k] for k in keys]
      items[name] = jax.tree_util.tree_unflatten(treedef, leaves)
    return items, restored[META]

  def replace(self, step: int, items: dict[str, Any], metadata: dict[str, Any]) -> None:
    """`save`, first deleting an existing `step` (a stage redone after a resume)."""
    if step in self._manager.all_steps():
      self._manager.delete(step)
    self.save(step, items, metadata)

  def set_aside(self, step: int) -> str:
    """Moves a damaged `step` out of the checkpoint folder (kept, never deleted), so it is
    no longer a candidate and the step number can be saved again; returns where."""
    dest = os.path.join(os.path.dirname(self.directory), "unreadable_checkpoints", str(step))
    if is_main():                      # one process moves it; the others wait, then look again
      os.makedirs(os.path.dirname(dest), exist_ok=True)
      if os.path.exists(dest):
        dest = f"{dest}.{len(os.listdir(os.path.dirname(dest)))}"
      os.replace(os.path.join(self.directory, str(step)), dest)
    barrier(f"set_aside_{step}")
    self._manager.reload()
    return dest

  def restore_metadata(self, step: int | None = None) -> dict:
    """Only the JSON metadata of `step` (default newest)."""
    return self.restore({}, step)[1]

  def wait(self) -> None:
    """Blocks until every pending asynchronous save is on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
