"""The plumbing `pretrain.py` and `finetune.py` share (as mae's util/misc): nothing here is specific to one
recipe, and the training step itself lives in each script.

  * options      `make_parser`, `apply_recipe`: argparse from a script's {name: (default, help)} table and its
                 named recipes; `checked` types (`POSITIVE_INT`, `one_of`, ...) refuse a bad value when it is parsed
  * processes    `setup_distributed` (torchrun's RANK / LOCAL_RANK), `all_reduce` / `all_gather` /
                 `gather_rows`: every collective, its tensors on the process group's device
  * precision    `amp_setup`: one autocast context and a GradScaler for fp16
  * optimiser    `make_optimizer` (AdamW groups), `get_lr` (warmup + cosine), `set_lr`, `sync_gradients`
                 (DDP's no_sync while accumulating), `clip_gradients`
  * data         `make_loader`, `Epochs` (epochs of optimizer steps, reseeded for exact resumes)
  * reporting    `TrainLog`: progress bar and log.jsonl
  * safety       `RunLock` (one run per out_dir), `check_finite` and `state_is_finite` (one stop for every
                 process), `load_checkpoint_file` (the one safe loader), `find_resume`, `resume_text`,
                 `save_checkpoint` (atomic), `append_jsonl`
"""

import argparse
import atexit
import json
import math
import os
import pickle
import re
import socket
import time
import warnings
from contextlib import nullcontext
from dataclasses import fields
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help keeps the docstring's layout and ends each option with its default, unless its text already
    says what the default is."""

    def _get_help_string(self, action):
        return action.help if "default" in (action.help or "") else super()._get_help_string(action)


def make_parser(description, options, types, recipes=None):
    """argparse from a script's {name: (default, help)} table; booleans get --name/--no-name.

    `recipes` names the script's recipes ({name: dataclass}) and adds --recipe: an option that is a field of
    the recipes has default None in the table and is filled from the chosen recipe by `apply_recipe`; its
    help lists every recipe's value."""
    parser = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    recipe_fields = {f.name for f in fields(next(iter(recipes.values())))} if recipes else set()
    if recipes:
        parser.add_argument("--recipe", choices=list(recipes), default=None,
                            help=f"named recipe; default: {next(iter(recipes))} with --data, demo without "
                                 f"(docs/recipe.md)")
    for key, (value, help) in options.items():
        if key in recipe_fields:
            values = ", ".join(f"{name} {getattr(recipe, key)!r}" for name, recipe in recipes.items())
            help = f"{help} (default: the recipe's: {values})"
        if isinstance(value, bool) or types.get(key) is bool:
            parser.add_argument(f"--{key}", action=argparse.BooleanOptionalAction, default=value, help=help)
        else:
            parser.add_argument(f"--{key}", type=types.get(key, type(value)), default=value, help=help)
    return parser


def checked(kind, test, meaning):
    """An argparse `type`: the text as `kind`, refused unless `test(value)` holds. argparse then stops before
    any work with one line naming the option and the value: "argument --accum_steps: '0' is not a whole
    number >= 1"."""
    def convert(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not test(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {meaning}")
        return value
    return convert


def one_of(*names):
    """An argparse `type` that takes one of `names`."""
    return checked(str, lambda v: v in names, f"one of {', '.join(names)}")


POSITIVE_INT = checked(int, lambda v: v >= 1, "a whole number >= 1")
COUNT = checked(int, lambda v: v >= 0, "a whole number >= 0")
POSITIVE = checked(float, lambda v: 0 < v < math.inf, "a finite number > 0")
NON_NEGATIVE = checked(float, lambda v: 0 <= v < math.inf, "a finite number >= 0")
FRACTION = checked(float, lambda v: 0 <= v < 1, "a number in [0, 1)")
PROBABILITY = checked(float, lambda v: 0 <= v <= 1, "a number in [0, 1]")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
DTYPE = one_of(*DTYPES)
# The options both recipe scripts have, each with the check its value must pass.
TRAINING_TYPES = {"data": str, "resume": str, "stride": POSITIVE_INT, "num_workers": COUNT, "batch_size": POSITIVE_INT,
                  "accum_steps": POSITIVE_INT, "epochs": POSITIVE_INT, "warmup_epochs": COUNT, "base_lr": POSITIVE,
                  "min_lr": NON_NEGATIVE, "weight_decay": NON_NEGATIVE, "clip_grad": POSITIVE, "dtype": DTYPE,
                  "log_every": POSITIVE_INT, "save_every": POSITIVE_INT, "max_steps": COUNT}


def shown(value):
    """A recipe's value as its line prints it: '' for an empty string (rand_aug off), else as it is."""
    return "''" if value == "" else value


def apply_recipe(args, recipes, argv_data):
    """Fill the options the command line left unset from the chosen recipe: --recipe, else the first recipe
    (the paper's) when --data is given, else "demo". Returns the line a run prints first: the recipe's
    name and every value it sets, which of them differ from the paper's recipe, and which values the command
    line changed."""
    name = args.recipe or (next(iter(recipes)) if argv_data is not None else "demo")
    recipe, changed = recipes[name], []
    for field in fields(recipe):
        given = getattr(args, field.name)
        if given is None:
            setattr(args, field.name, getattr(recipe, field.name))
        elif given != getattr(recipe, field.name):
            changed.append(f"{field.name} {given}")
    args.recipe = name
    values = ", ".join(f"{f.name} {shown(getattr(recipe, f.name))}" for f in fields(recipe))
    paper_name, paper = next(iter(recipes.items()))
    differs = [f"{f.name} (paper {shown(getattr(paper, f.name))})" for f in fields(recipe)
               if getattr(recipe, f.name) != getattr(paper, f.name)]  # each one's reason: docs/recipe.md
    line = f"recipe {name}: {values}" + (f"; differs from {paper_name}: {', '.join(differs)}" if differs else "")
    return line + (f"; changed on the command line: {', '.join(changed)}" if changed else "")


# ----------------------------------------------------------------------------- distributed and precision

def setup_distributed():
    """(rank, world_size, device). DDP only when torchrun set RANK; gloo on CPU, nccl on CUDA.

    RANK numbers the process among all nodes (it picks the data shard and who writes files);
    LOCAL_RANK numbers it on its own node, so it picks the GPU: node 1 of 2 x 8 GPUs runs
    RANK 8..15 on cuda:0..7."""
    if "RANK" not in os.environ:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():  # needs GPUs: the CPU tests run the gloo branch and check_finite/all_reduce
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
        return rank, world, torch.device("cuda", local)
    dist.init_process_group("gloo")
    return rank, world, torch.device("cpu")


def finish(results, world, lock=None):
    """Leave the process group together (a rank tearing gloo down while another still finishes a collective
    can abort), give the run's `RunLock` back and hand back `results`."""
    if lock is not None:
        lock.release()
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return results


def collective_device():
    """Where a collective's tensors must live: the CPU when the process group has a CPU backend (gloo),
    else the current CUDA device (NCCL has none: a CPU tensor there fails with "No backend type
    associated with device type cpu")."""
    device_types = {item.split(":")[0] for item in dist.get_backend_config().split(",")}
    return torch.device("cpu") if "cpu" in device_types else torch.device("cuda")  # the one set_device chose


def all_reduce(value, op=dist.ReduceOp.SUM):
    """`value` (a tensor or a number) reduced over all processes, as a tensor on the caller's device.
    With this and `all_gather`, every collective of the project moves its tensors to
    `collective_device()` by construction; one process returns the value as it is."""
    tensor = torch.as_tensor(value)
    if not dist.is_initialized():
        return tensor
    reduced = tensor.to(collective_device(), copy=True)
    dist.all_reduce(reduced, op=op)
    return reduced.to(tensor.device)


def all_gather(tensor):
    """[every process's `tensor`] (same shape on all), in rank order, on the caller's device."""
    if not dist.is_initialized():
        return [tensor]
    local = tensor.to(collective_device())
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, local)
    return [part.to(tensor.device) for part in parts]


def gather_rows(rows, index, total):
    """Every process's rows (n, K) of dataset videos `index` (n,) -> all `total` videos' rows in dataset
    order, the same on every process. Shards differ in size by at most one and may be empty; padding rows
    carry index -1. Float64, so indices and labels stay exact integers."""
    rows = torch.cat([index[:, None].double(), rows.double()], dim=1)
    world = dist.get_world_size() if dist.is_initialized() else 1
    padded = rows.new_full((math.ceil(total / world), rows.shape[1]), -1.0)
    padded[:len(rows)] = rows
    rows = torch.cat(all_gather(padded))
    rows = rows[rows[:, 0] >= 0]
    rows = rows[rows[:, 0].argsort()]
    if not torch.equal(rows[:, 0].long(), torch.arange(total)):
        raise RuntimeError(f"evaluation gathered {len(rows)} rows for {total} videos: some counted twice or never")
    return rows[:, 1:]


def amp_setup(dtype_name, device):
    """(autocast context, GradScaler): bf16 on CUDA when supported, else fp32; GradScaler only for fp16."""
    if dtype_name is None:  # the CUDA default needs a GPU; the tests run bf16 and fp16 on the CPU by name
        dtype_name = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    dtype = DTYPES[dtype_name]
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    return autocast, scaler


# ----------------------------------------------------------------------------- optimisation

def no_weight_decay(name, param):
    """Biases, norms, position embeddings and the mask token are not decayed (docs/recipe.md)."""
    return param.ndim <= 1 or name.endswith("pos_embed") or name.endswith("mask_token")


def make_optimizer(model, lr, weight_decay, betas, sampler_lr_scale=1.0):
    """AdamW over theta and phi together (the paper trains both with one optimizer), fused (CUDA and the
    CPU both have the kernel). With sampler_lr_scale != 1 the sampler's parameters (theta) get their own
    groups whose `lr_scale` `set_lr` applies; at 1 there are just two groups, decayed or not."""
    def decay_groups(named, **extra):
        return [{"params": [p for n, p in named if not no_weight_decay(n, p)], "weight_decay": weight_decay, **extra},
                {"params": [p for n, p in named if no_weight_decay(n, p)], "weight_decay": 0.0, **extra}]

    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if sampler_lr_scale == 1.0:
        groups = decay_groups(params)
    else:
        theta = [(n, p) for n, p in params if n.startswith("sampler.")]
        phi = [(n, p) for n, p in params if not n.startswith("sampler.")]
        groups = decay_groups(phi) + decay_groups(theta, lr_scale=sampler_lr_scale)
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=betas, fused=True)


def get_lr(step, total_steps, warmup_steps, lr, min_lr):
    """Linear warmup to lr, then half a cosine down to min_lr, per optimizer step."""
    if step < warmup_steps:
        return lr * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer, lr):
    """The schedule's lr for this step, times each group's own scale (layer-wise decay in finetune.py)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def sync_gradients(model, now):
    """The context of one micro-step's backward: DDP all-reduces gradients only when `now` (the last
    micro-step of an optimizer step); `model.no_sync()` skips the all-reduce on the others."""
    return model.no_sync() if isinstance(model, DDP) and not now else nullcontext()


def clip_gradients(model, optimizer, scaler, max_norm):
    """Clip the gradient norm to max_norm (None: no clipping), on unscaled gradients when fp16 scales them."""
    if max_norm:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)


def make_loader(name, dataset, batch_size, accum_steps, rank, world, seed, num_workers, device):
    """(sampler, loader, optimizer steps per epoch): shuffled shards of equal size for every rank (a
    DistributedSampler also for one process, so there is one code path)."""
    sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed,
                                                  drop_last=True)
    # Pinned pages make the transfers asynchronous (non_blocking); pinning needs CUDA, so no CPU test runs it.
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True,
                                         num_workers=num_workers, pin_memory=device.type == "cuda")
    steps = len(loader) // accum_steps
    if steps == 0:
        raise ValueError(f"{name}: {len(dataset)} videos give no full step of {batch_size} x {accum_steps} per process "
                         f"on {world} process(es)")
    return sampler, loader, steps


class Epochs:
    """The training data as epochs of optimizer steps: `epoch(e, step)` yields each step's `accum_steps`
    loader batches, reseeded so that resuming at an epoch replays it exactly (data order, augmentation in
    the main process, masks). `max_steps` ends training inside an epoch; such an epoch is not `complete`,
    so it is not checkpointed. `failed` lists the dataset indices of the unreadable videos the dataset
    replaced in the epoch, one per failed draw (`unreadable` sums them over every process)."""

    def __init__(self, loader, sampler, steps_per_epoch, accum_steps, seed, rank, max_steps=None):
        self.loader, self.sampler, self.steps_per_epoch, self.accum_steps = loader, sampler, steps_per_epoch, accum_steps
        self.seed, self.rank, self.max_steps = seed, rank, max_steps
        self.complete, self.failed = False, []

    def epoch(self, epoch, step):
        steps = self.steps_per_epoch if self.max_steps is None else min(self.steps_per_epoch, self.max_steps - step)
        self.complete, self.failed = steps == self.steps_per_epoch, []
        self.sampler.set_epoch(epoch)
        torch.manual_seed(self.seed + 1000 * epoch + self.rank)
        batches = iter(self.loader)
        for _ in range(max(steps, 0)):
            micro = [next(batches) for _ in range(self.accum_steps)]  # each (clips, labels, failed indices)
            self.failed += [i for _, _, failed in micro for i in failed[failed >= 0].tolist()]  # CPU: no sync
            yield micro

    def unreadable(self):
        """(the epoch's distinct unreadable videos over every process, sorted; the failed draws): a file drawn
        twice, or by two processes, is one video. Every process calls it (collective)."""
        draws = int(all_reduce(len(self.failed)))
        if not draws:
            return [], 0
        seen = torch.zeros(len(self.loader.dataset), dtype=torch.uint8)  # one flag per video of the dataset
        seen[self.failed] = 1
        seen = all_reduce(seen, op=dist.ReduceOp.MAX)
        samples = self.loader.dataset.samples
        return sorted(samples[i][0] for i in seen.nonzero().flatten().tolist()), draws


class TrainLog:
    """What a run reports as it goes: a progress bar, and every `log_every` optimizer steps (and at the last)
    one record in out_dir/log.jsonl with the losses, lr and clips/s, on rank 0. The non-finite check runs at
    the same steps on every process (it is collective): these are the loop's only host-device syncs.
    `last_good` is the (checkpoint, step) a stop points back to: the one resumed from, then each
    out_dir/checkpoint.pt written (`save`)."""

    def __init__(self, out_dir, total_steps, step, log_every, is_main, show_bar=True, resume=None):
        self.out_dir, self.log_every, self.is_main = Path(out_dir), log_every, is_main
        self.ckpt_path, self.last_good = self.out_dir / "checkpoint.pt", (resume, step) if resume else None
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.bar = tqdm(total=total_steps, initial=step, disable=not (is_main and show_bar), dynamic_ncols=True)
        self.t_start, self.t_log, self.clips = time.time(), time.time(), 0
        if resume and is_main:
            self.drop_after(step)

    def step(self, step, epoch, losses, finite, clips, lr):
        """After optimizer step `step` of `clips` clips: `losses` {name: device tensor} are read only at log steps."""
        self.bar.update()
        self.clips += clips
        if step % self.log_every == 0 or step == self.bar.total:
            check_finite(finite, f"non-finite loss by step {step}", self.last_good)
            speed = self.clips / (time.time() - self.t_log)
            self.t_log, self.clips = time.time(), 0
            values = {name: value.item() for name, value in losses.items()}
            self.bar.set_postfix(**{k: f"{v:.4f}" for k, v in values.items()}, lr=f"{lr:.2e}", clips_s=f"{speed:.1f}")
            self.write({"step": step, "epoch": epoch, **values, "lr": lr, "clips_per_s": speed})

    def write(self, record):
        if self.is_main:
            append_jsonl(self.out_dir / "log.jsonl", record)

    def print(self, text):
        if self.is_main:
            self.bar.write(text)

    def drop_after(self, step):
        """Resuming at `step`: log.jsonl's records past it (steps a stopped run took after its last checkpoint,
        which this run takes again) and a line cut short by a kill are removed, so the log reads as one run."""
        path = self.out_dir / "log.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        kept = [line for line in lines if (record := read_record(line)) is not None and record.get("step", 0) <= step]
        if len(kept) < len(lines):
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, path)
            self.print(f"{path}: removed {len(lines) - len(kept)} record(s) after step {step}, which this run repeats")

    def end_of_epoch(self, epoch, step, finite, model, optimizer, epochs):
        """Before anything is saved, on every process: stop on a non-finite loss, then on non-finite weights or
        optimizer state (the last update of an epoch can overflow after a finite loss); then the epoch's
        unreadable videos over all processes, named in a warning and returned for the epoch's log record."""
        check_finite(finite, f"non-finite loss in epoch {epoch}", self.last_good)
        check_finite(state_is_finite(model, optimizer), f"weights or optimizer state not finite after step {step}",
                     self.last_good)
        videos, draws = epochs.unreadable()
        if videos and self.is_main:
            shown = ", ".join(videos[:10]) + (f" and {len(videos) - 10} more" if len(videos) > 10 else "")
            warnings.warn(f"epoch {epoch}: skipped {len(videos)} unreadable videos ({draws} draws replaced): {shown}")
        return {"skipped_videos": len(videos), "skipped_draws": draws, "skipped_files": videos}

    def save(self, path, model, optimizer, scaler, step, epoch, cfg, args, **extra):
        """Rank 0 writes `path` (`save_checkpoint`); every process notes out_dir/checkpoint.pt as the last good
        state."""
        if self.is_main:
            save_checkpoint(path, model, optimizer, scaler, step, epoch, cfg, args, **extra)
        if Path(path) == self.ckpt_path:
            self.last_good = (path, step)


def read_record(line):
    """One log.jsonl line as a dict; None for a line a kill cut short."""
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


# ------------------------------------------------------------------------- safety: one run per out_dir, finite values

class RunLock:
    """One run per out_dir at a time: rank 0 creates `folder`/run.lock holding its process id and host and
    removes it when the process exits. A second run finds it at its start and stops, naming the holder; a
    lock whose process is gone (a run killed on this host) is taken over with a note. As the run's first
    write, it names an out_dir that cannot be written before any work. Every process calls it (collective)."""

    def __init__(self, folder, rank=0):
        self.path, self.me = Path(folder) / "run.lock", f"{os.getpid()} {socket.gethostname()}"
        error = self.take() if rank == 0 else None
        if int(all_reduce(int(error is not None))):
            raise RuntimeError(error or f"{folder}: rank 0 could not take {self.path} (its error says why)")
        if rank == 0:
            atexit.register(self.release)

    def take(self):
        """None once the lock is this process's, else why not, in one line."""
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            while (holder := self.create_or_read()) != self.me:  # the lock can change hands while we look
                pid, _, host = holder.partition(" ")
                if not holder:
                    continue  # released, or not yet written by its new holder: look again
                if host != socket.gethostname() or process_exists(pid):
                    return (f"--out_dir {folder} is in use by process {pid} on {host} (lock {self.path}); wait for "
                            f"it to end or choose another --out_dir")
                print(f"note: {self.path} named process {pid} on {host}, which is gone (killed?); taking it over")
                self.path.unlink(missing_ok=True)
            return None
        except OSError as e:
            return f"--out_dir {folder} cannot be written ({e.strerror or e}); choose a folder you can write"

    def create_or_read(self):
        """This process's "pid host" when this call created the lock (or an earlier run of this process holds
        it: tests call main more than once), else the holder's; '' when it vanished meanwhile."""
        try:
            with open(self.path, "x") as f:
                f.write(self.me)
            return self.me
        except FileExistsError:
            try:
                return self.path.read_text()
            except FileNotFoundError:
                return ""

    def release(self):
        """Remove the lock if it is still this process's (also at exit, after an error)."""
        try:
            if self.path.read_text() == self.me:
                self.path.unlink()
        except OSError:
            pass


def process_exists(pid):
    """Whether process `pid` (text) runs on this host; a lock naming no number counts as gone."""
    try:
        os.kill(int(pid), 0)  # signal 0: only asks
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # it exists, as another user's
        return True
    return True


def state_is_finite(model, optimizer):
    """A device bool: every floating-point tensor of the weights and of the optimizer state is finite."""
    tensors = [t for t in model.state_dict().values() if t.is_floating_point()]
    tensors += [t for state in optimizer.state.values() for t in state.values()
                if torch.is_tensor(t) and t.is_floating_point()]
    return torch.stack([torch.isfinite(t).all() for t in tensors]).all()


def check_finite(finite, problem, last_good):
    """Stop every process when `finite` (a device bool) is False in any of them, before anything is saved:
    DDP's averaged gradients carry one process's NaN into all weights, so rank 0 must not save even if its
    own values were finite. Every process calls this at the same points and raises the same error, naming
    `last_good` ((checkpoint, step) or None). One host sync."""
    bad = int(all_reduce((~finite).long()))  # processes that saw a non-finite value
    if bad:
        world = dist.get_world_size() if dist.is_initialized() else 1
        where = (f"{last_good[0]} is still the last good state (from step {last_good[1]}); resume from it"
                 if last_good else "this run wrote no checkpoint yet; start again")
        raise FloatingPointError(
            f"{problem} in {bad} of {world} process(es); nothing saved: {where}, e.g. with --clip_grad 1.0, a "
            f"lower --base_lr or --dtype bf16 (docs/recipe.md: Troubleshooting)")


# ----------------------------------------------------------------------------- safety: checkpoints

def load_checkpoint_file(path):
    """torch.load(path) on the CPU with weights_only=True: tensors, plain containers and values, and
    argparse.Namespace only; nothing in the file runs. Returns whatever the file holds (usually a dict).
    Whatever the file (torch.save's zip or legacy format, a plain pickle, a copy cut short, another
    format), a failure is a ValueError naming it."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        refused = unsafe_globals(path, e)
        if refused:
            raise ValueError(
                f"{path}: torch.load(weights_only=True) refused this file: it holds objects other than tensors, "
                f"plain containers and argparse.Namespace ({', '.join(refused)}). Unpickling such objects can run "
                f"arbitrary code; if you trust the file, re-save just its tensors.") from e
        raise ValueError(f"{path}: not a readable PyTorch checkpoint (no torch.save file of tensors and plain "
                         f"values: a plain pickle, or another format)") from e
    except OSError:
        raise  # a missing or unreadable path: the OS's error names it
    except Exception as e:  # a truncated, corrupt or foreign file fails anywhere in the unpickler
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from e


def unsafe_globals(path, error):
    """The globals a refused file would import: all of them for torch.save's zip format, the first (from
    the error) for the legacy format and plain pickles; argparse.Namespace is allowed."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)  # the zip format only
    except (ValueError, RuntimeError):
        names = re.findall(r"GLOBAL (\S+)", str(error))
    return sorted(set(names) - {"argparse.Namespace"})


def find_resume(explicit, ckpt_path):
    """The checkpoint to resume from: `explicit` (--resume), else ckpt_path when it exists, else None.
    Every process must agree: a node that cannot see out_dir would start over while the others resume."""
    resume = explicit or (ckpt_path if Path(ckpt_path).exists() else None)
    found, world = int(all_reduce(int(resume is not None))), dist.get_world_size() if dist.is_initialized() else 1
    if found not in (0, world):
        raise FileNotFoundError(f"{ckpt_path}: seen by {found} of {world} processes; put out_dir on a disk every "
                                f"node sees (or pass --resume with a path every node can read)")
    return resume


def resume_text(resume, step, epoch, saved_args, args):
    """The line a resumed run prints: where it goes on from, and every option whose value differs from the
    run that wrote the checkpoint (the new value holds from here on: a new --base_lr or --epochs reshapes
    the rest of the schedule)."""
    now = vars(args)
    changed = [f"{key} {saved_args[key]} -> {now[key]}" for key in saved_args
               if key in now and key != "resume" and saved_args[key] != now[key]]
    return f"resumed from {resume} at step {step}, epoch {epoch}" + (
        f"; changed on resume: {', '.join(changed)}" if changed else "")


def save_checkpoint(path, model, optimizer, scaler, step, epoch, cfg, args, **extra):
    """Everything to resume exactly, as plain types, written atomically (a crash never leaves a torn file)
    through a temporary file of this process's own (two processes never write the same one)."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
             "step": step, "epoch": epoch, "config": cfg.to_dict(), "args": vars(args), **extra}
    tmp = Path(f"{path}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def append_jsonl(path, record):
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
