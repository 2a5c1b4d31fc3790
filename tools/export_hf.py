"""Write a checkpoint as a Hugging Face VideoMAE folder (config.json + model.safetensors), the layout
transformers' `from_pretrained` loads and that every option taking a checkpoint here reads back.

    python -m tools.export_hf runs/pretrain/checkpoint.pt hf/pretrain                 # VideoMAEForPreTraining
    python -m tools.export_hf runs/pretrain/checkpoint.pt hf/encoder --encoder_only   # VideoMAEModel
    python -m tools.export_hf runs/finetune/pretrained/best.pt hf/classifier --classes names.txt
                                                                         # VideoMAEForVideoClassification

The checkpoint is anything --pretrained or --resume takes (pretrain.py's, finetune.py's, the authors' or
VideoMAE's files, a Hugging Face folder), told apart by its keys. The layout has no place for AdaMAE's sampler:
it is left out, and the folder reads back as a tube model (docs/fidelity.md, "Hugging Face folders").
"""

from engine import make_parser
from tools.encoder import read_class_names
from weights import huggingface
from weights.convert import read_checkpoint

OPTIONS = {
    "encoder_only": (False, "a pre-training checkpoint's encoder alone (VideoMAEModel: tokenizer, blocks, final "
                            "norm); default: encoder and decoder (VideoMAEForPreTraining)"),
    "classes": (None, "a classifier's class names, one per line (line i = class i): config.json's id2label; "
                      "default LABEL_0, LABEL_1, ..."),
}


def get_args(argv=None):
    parser = make_parser(__doc__, OPTIONS, {"classes": str})
    parser.add_argument("checkpoint", help="the checkpoint to write (a file, or a Hugging Face folder)")
    parser.add_argument("out", help="the folder to write config.json and model.safetensors into")
    return parser.parse_args(argv)


def export(args):
    """Write args.checkpoint into args.out; returns {"architecture", "tensors", "left_out"}."""
    cfg, state, num_classes = read_checkpoint(args.checkpoint)
    if num_classes is not None:
        if args.encoder_only:
            raise ValueError(f"--encoder_only: {args.checkpoint} is a fine-tuned classifier, written whole")
        names = read_class_names(args.classes, num_classes) if args.classes else None
        huggingface.write_classifier(args.out, cfg, state, names)
        kind, left_out = "classifier", []
    elif args.classes:
        raise ValueError(f"--classes: {args.checkpoint} is a pre-training checkpoint; it has no classes")
    else:
        kind = "encoder" if args.encoder_only else "pretraining"
        write = huggingface.write_encoder if args.encoder_only else huggingface.write_pretrained
        left_out = write(args.out, cfg, state)
    architecture = huggingface.ARCHITECTURES[kind]
    print(f"{args.checkpoint} -> {args.out}: {architecture}, {len(state) - len(left_out)} of our tensors, "
          f"{cfg.num_frames} frames of {cfg.img_size} px")
    parts = sorted({k.split(".")[0] for k in left_out})
    if left_out:
        print(f"left out (no place in {architecture}): {len(left_out)} tensors of {', '.join(parts)}")
    return {"architecture": architecture, "tensors": len(state) - len(left_out), "left_out": left_out}


def main(argv=None):
    return export(get_args(argv))


if __name__ == "__main__":
    main()
