"""What a checkpoint of any layout must hold: the weights inside a checkpoint dict, and the tensor shapes an
AdaMAEConfig (and a classifier head) expects, checked with the missing, unexpected and mis-shaped keys named."""

import torch

from adamae import AdaMAE


def state_dict_of(checkpoint):
    """The weights inside a checkpoint dict ('model' or 'module' entry), or the dict itself."""
    for key in ("model", "module"):
        if isinstance(checkpoint.get(key), dict):
            return checkpoint[key]
    return checkpoint


def expected_shapes(cfg, num_classes=None):
    """{name: shape} of AdaMAE(cfg) (num_classes None) or of the fine-tuning classifier over its encoder
    (tokenizer, encoder blocks, fc_norm, head); built on the meta device, so free at any size."""
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in AdaMAE(cfg).state_dict().items()}
    if num_classes is None:
        return shapes
    shapes = {k: v for k, v in shapes.items() if k.startswith(("tokenizer.", "encoder.blocks."))}
    D = cfg.encoder_dim
    return {**shapes, "fc_norm.weight": (D,), "fc_norm.bias": (D,), "head.weight": (num_classes, D),
            "head.bias": (num_classes,)}


def check_shapes(state_dict, expected, path, what):
    """Raise a ValueError naming the file unless state_dict has exactly the expected names and shapes."""
    missing = sorted(set(expected) - set(state_dict))
    extra = sorted(set(state_dict) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state_dict) if tuple(state_dict[k].shape) != expected[k])
    if missing or extra or wrong:
        raise ValueError(f"{path}: not a loadable {what}: missing {missing[:8]}, unexpected {extra[:8]}, "
                         f"mis-shaped {[(k, tuple(state_dict[k].shape), expected[k]) for k in wrong[:8]]}")
