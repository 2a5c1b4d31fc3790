"""The top-5 classes of one video under a fine-tuned classifier: the multi-view test (softmax averaged).

    python -m tools.predict clip.mp4 --resume runs/finetune/pretrained/best.pt --classes names.txt
"""

from classifier import VideoClassifier, evaluate
from data import video_length
from engine import amp_setup, make_parser
from tools.encoder import ENCODER_OPTIONS, ENCODER_TYPES, default_device, read_class_names, views_of
from weights.convert import read_classifier
from weights.resize import at_clip_size

OPTIONS = {
    "classes": (None, "class names, one per line (line i = class i)"),
    **{k: ENCODER_OPTIONS[k] for k in ("resume", "num_frames", "img_size", "sampling", "stride", "test_clips",
                                          "test_crops", "dtype")},
}


def get_args(argv=None):
    parser = make_parser(__doc__, OPTIONS, {"classes": str, **ENCODER_TYPES})
    parser.add_argument("video", help="the video to classify")
    args = parser.parse_args(argv)
    if args.resume is None:
        parser.error("--resume FILE is required: a classifier (finetune.py's best.pt or checkpoint.pt, a "
                     "VideoMAE/AdaMAE fine-tuned file, or a Hugging Face VideoMAEForVideoClassification folder)")
    return args


def predict(args, device):
    """The --resume classifier's top-5 classes of the video with their probabilities: [(class, name, p)]."""
    cfg, state, num_classes = read_classifier(args.resume)
    cfg = at_clip_size(cfg, args.num_frames, args.img_size)
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
