"""The top-5 classes of one video under a fine-tuned classifier: the multi-view test (softmax averaged).

    python -m tools.predict clip.mp4 --resume runs/finetune/pretrained/best.pt --classes names.txt
"""

from pathlib import Path

from classifier import VideoClassifier, evaluate
from data import video_length
from engine import amp_setup, make_parser
from tools.encoder import ENCODER_OPTIONS, ENCODER_TYPES, default_device, views_of
from weights.convert import read_classifier

OPTIONS = {
    "classes": (None, "class names, one per line (line i = class i)"),
    **{k: ENCODER_OPTIONS[k] for k in ("resume", "sampling", "stride", "test_clips", "test_crops", "dtype")},
}


def get_args(argv=None):
    parser = make_parser(__doc__, OPTIONS, {"classes": str, **ENCODER_TYPES})
    parser.add_argument("video", help="the video to classify")
    args = parser.parse_args(argv)
    if args.resume is None:
        parser.error("--resume FILE is required: a classifier (finetune.py's best.pt or checkpoint.pt, or a "
                     "VideoMAE/AdaMAE fine-tuned file)")
    return args


def read_class_names(path, num_classes):
    """One class name per line, line i = class i; the count must match the classifier's."""
    names = Path(path).read_text().splitlines()
    if len(names) != num_classes:
        raise ValueError(f"{path}: {len(names)} class names for a classifier of {num_classes} classes "
                         f"(one name per line, line i = class i)")
    return names


def predict(args, device):
    """The --resume classifier's top-5 classes of the video with their probabilities: [(class, name, p)]."""
    cfg, state, num_classes = read_classifier(args.resume)
    names = read_class_names(args.classes, num_classes) if args.classes else [str(c) for c in range(num_classes)]
    video_length(args.video)  # an unreadable video stops here, named, instead of being swapped for another
    model = VideoClassifier(cfg, num_classes).to(device)
    model.load_state_dict(state)
    probs = evaluate(model, views_of([(args.video, 0)], cfg, args), device, amp_setup(args.dtype, device)[0],
                     batch_size=1)[0][0]
    top = probs.topk(min(5, num_classes))
    print(f"{args.video}: {args.test_clips} clips x {args.test_crops} crops, softmax averaged")
    ranked = [(c, names[c], p) for p, c in zip(top.values.tolist(), top.indices.tolist())]
    for _, name, p in ranked:
        print(f"{100 * p:6.2f}%  {name}")
    return ranked


def main(argv=None):
    return predict(get_args(argv), default_device())


if __name__ == "__main__":
    main()
