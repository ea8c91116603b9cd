"""All configuration dataclasses, with their defaults, in one place.

Each pipeline stage reads its settings from one dataclass here; command-line
flags override fields. Keep defaults here, not as constants in the modules.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
from dataclasses import dataclass, field


@dataclass
class TednConfig:
    """TEDn evaluation settings."""

    flavor: str = "lmx"  # "lmx" prunes what LMX cannot express; "full" compares everything


@dataclass
class DegradeConfig:
    """Scan / phone-photo simulation applied to clean system crops at training time.

    Each ``p_*`` is the chance an effect is applied to one image; the ``max_*`` /
    ``min_*`` fields bound its magnitude, and ``strength`` scales every magnitude
    (0 = no change, 1 = the defaults, >1 = harsher). Defaults are deliberately
    strong: the model is judged on music engraved and degraded in unknown ways.
    Use ``DegradeConfig.preset("clean" | "light" | "default" | "strong")``.
    """

    strength: float = 1.0
    # left exactly as rendered: screenshots and clean PDFs are real inputs too
    p_clean: float = 0.1
    p_photo: float = 0.5  # photo style (perspective, curl, shadows); else flatbed-scan style
    # crop as a person draws a box: loose (white, neighbouring staves) or slightly clipped
    p_loose_crop: float = 0.85
    max_pad_vertical: float = 0.35  # extra margin above/below, fraction of height
    max_pad_horizontal: float = 0.04  # extra margin left/right, fraction of width
    p_neighbour: float = 0.5  # fragments of the adjacent systems in the extra margin
    max_clip_px: int = 4  # pixels cut off an edge when the box is drawn too tight
    p_clip: float = 0.3
    max_stretch: float = 0.12  # horizontal spacing change (engraver variety), +-fraction
    # geometry
    p_rotate: float = 0.7
    max_rotate_deg: float = 1.5
    p_perspective: float = 0.7  # photo style only (scans get a mild skew)
    max_perspective: float = 0.05  # corner displacement, fraction of the image height
    p_curl: float = 0.5  # photo style only
    max_curl: float = 0.06  # vertical bend amplitude, fraction of height
    # page and ink
    p_paper: float = 0.8
    max_paper_tint: float = 0.25  # paper darkness (0 = white)
    max_paper_grain: float = 0.06
    p_ink: float = 0.5  # ink spread or erosion, faded ink
    max_ink_fade: float = 0.35
    p_bleed: float = 0.3
    max_bleed: float = 0.2  # darkness of the mirrored ghost of the other side
    # light
    p_lighting: float = 0.7
    max_lighting: float = 0.45  # depth of the low-frequency illumination field
    p_shadow: float = 0.35
    max_shadow: float = 0.45
    # camera / scanner
    p_blur: float = 0.55
    max_blur_sigma: float = 1.4
    p_defocus: float = 0.2
    max_defocus_px: float = 2.5
    p_motion: float = 0.15
    max_motion_px: float = 5.0
    p_lowres: float = 0.4
    min_lowres_scale: float = 0.35
    p_noise: float = 0.7
    max_noise: float = 0.07  # sigma of sensor noise on the 0..1 scale
    p_jpeg: float = 0.6
    min_jpeg_quality: int = 15
    p_binarize: float = 0.2  # scan style only: global (Otsu) or adaptive thresholding

    @classmethod
    def preset(cls, name: str) -> "DegradeConfig":
        """Named settings: clean (no degradation), light, default, strong."""
        strengths = {"clean": 0.0, "light": 0.5, "default": 1.0, "strong": 1.4}
        if name not in strengths:
            raise ValueError(f"unknown degradation preset {name!r}; choose one of {sorted(strengths)}")
        return cls(strength=strengths[name])

    @property
    def enabled(self) -> bool:
        return self.strength > 0

    @classmethod
    def for_training(cls, train_cfg) -> "DegradeConfig":
        """The degradation a training run asked for with --degrade-strength / --p-clean."""
        return cls(strength=train_cfg.degrade_strength, p_clean=train_cfg.p_clean)


@dataclass
class ModelConfig:
    """Shape of the image-to-LMX transformer (ViT encoder + LMX decoder) and its MAE head.

    Images are grayscale systems resized to ``image_height`` (aspect kept) and
    cut into ``patch_height`` x ``patch_width`` patches; widths up to
    ``max_image_width`` are supported. ``max_tokens`` counts <bos> and <eos>.
    Use ``ModelConfig.small()`` (CPU) or ``ModelConfig.large()`` (one GPU).
    """

    image_height: int = 128
    patch_height: int = 16
    patch_width: int = 16
    # "conv": a stack of stride-2 3x3 convolutions down to the patch grid (locality a plain linear
    # patch embedding lacks; measured: the linear stem's model ignored the image, see the model card);
    # "linear": one patch_height x patch_width projection per patch, as in the original ViT.
    stem: str = "conv"
    stem_channels: int = 32  # width of the first convolution; doubles at each stride-2 layer (at most enc_dim)
    # Subtract each image's mean over its patches from the encoder output (before the final LayerNorm),
    # so the output cannot collapse to one vector for every patch, as every earlier run's did.
    center_memory: bool = True
    # Measures read per decode: systems are cut at their barlines into runs of this many measures,
    # each decoded alone and the token sequences joined (a model trained only on measure crops
    # writes one crop's worth and stops). 0 = whole systems. Decoding only; not part of the network.
    read_measures: int = 0
    # A head that reads the key and time signature from the system's left end (`HeaderHead`); greedy
    # decoding writes what it reads there instead of the decoder's guess. Off in weights saved before it.
    header_head: bool = False
    # The decoder's pitch read from the note map where a pointer head of its own looks (`PitchPointer`).
    pitch_pointer: bool = False
    max_image_width: int = 2048
    enc_dim: int = 256
    enc_depth: int = 4
    enc_heads: int = 4
    dec_dim: int = 256
    dec_depth: int = 3
    dec_heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.1
    max_tokens: int = 1024
    vocab_size: int = 227  # pad, bos, eos + the 224 LMX tokens (acai_omr.lmx.vocab)
    mae_dec_dim: int = 128
    mae_dec_depth: int = 2
    mae_dec_heads: int = 4

    @classmethod
    def small(cls) -> "ModelConfig":
        """Trains and decodes on a 2-core CPU (the default)."""
        return cls()

    @classmethod
    def large(cls) -> "ModelConfig":
        """For one GPU: taller images (legibility of small symbols) and a wider, deeper network."""
        return cls(
            image_height=192, patch_height=16, patch_width=16, max_image_width=3072,
            enc_dim=512, enc_depth=8, enc_heads=8, dec_dim=512, dec_depth=6, dec_heads=8,
            mae_dec_dim=256, mae_dec_depth=4, mae_dec_heads=8,
        )

    @classmethod
    def tiny(cls) -> "ModelConfig":
        """A few thousand parameters, for fast tests only (not for training)."""
        return cls(
            image_height=32, patch_height=16, patch_width=8, max_image_width=256, enc_dim=32, enc_depth=2,
            enc_heads=2, dec_dim=48, dec_depth=2, dec_heads=2, max_tokens=64, mae_dec_dim=16, mae_dec_depth=1,
            mae_dec_heads=2,
        )

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        """Build from a dict (e.g. config.json); unknown keys raise ValueError naming them."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig field(s): {', '.join(unknown)}")
        # configs written before these fields existed: linear patches, uncentred memory
        data = {"stem": "linear", "center_memory": False, **data}
        return cls(**data)


@dataclass
class TrainConfig:
    """Settings shared by every training phase (`acai-omr train ...`); each field is a CLI flag."""

    data: str = "data"  # dataset root holding <split>/manifest.jsonl
    out: str = "runs/train"  # run folder: last.pt, best.pt, log.jsonl, best_weights/
    steps: int = 20000  # optimizer steps in total (the cosine schedule ends here)
    batch_size: int = 8  # per process
    lr: float = 3e-4  # peak learning rate
    min_lr_ratio: float = 0.05  # cosine floor as a fraction of the peak
    warmup_steps: int = 300
    weight_decay: float = 0.05
    beta2: float = 0.98
    grad_clip: float = 1.0
    seed: int = 0
    augment: bool = True  # on-the-fly scan/photo degradation of training images
    degrade_strength: float = 1.0  # DegradeConfig.strength for training images (1 = the defaults)
    p_clean: float = 0.1  # chance a training image is left undegraded (DegradeConfig.p_clean)
    max_tokens: int = 512  # drop training systems with longer label sequences
    num_workers: int = 1  # DataLoader worker processes per training process
    threads: int = 0  # CPU threads for torch; 0 = the cores left over after data workers
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU), bf16, fp32
    log_every: int = 10
    ckpt_every: int = 200
    keep_ckpts: int = 0  # also keep the last N checkpoints as step-NNNNNN.pt (for `train export` to average)
    eval_every: int = 500
    eval_limit: int = 32  # dev systems per periodic evaluation
    time_limit_min: float = 0.0  # stop cleanly (checkpoint + eval) after this many minutes; 0 = none
    resume: bool = True  # continue from <out>/last.pt when it exists


@dataclass
class MaeTrainConfig(TrainConfig):
    """MAE pretraining of the encoder: degraded image in, clean image reconstructed."""

    model: str = "small"  # ModelConfig preset: small (CPU) or large (GPU)
    out: str = "runs/mae"
    steps: int = 5000
    batch_size: int = 16
    lr: float = 5e-4
    mask_ratio: float = 0.75


@dataclass
class ReadingTrainConfig(TrainConfig):
    """Training that reads images into LMX, its checkpoints chosen by greedy TEDn on a dev split."""

    eval_split: str = "dev"  # dev (rendered, data/dev) or lieder-dev, used to pick the best checkpoint
    eval_max_len: int = 0  # greedy decoding cap during dev evaluation; 0 = the model's default


@dataclass
class SupervisedTrainConfig(ReadingTrainConfig):
    """Image -> LMX training: teacher forcing, then scheduled sampling."""

    model: str = "small"  # ModelConfig preset: small (CPU) or large (GPU)
    out: str = "runs/supervised"
    init_mae: str = ""  # MAE checkpoint (last.pt/best.pt) whose encoder initialises ours
    init_weights: str = ""  # weights folder (e.g. weights/) to continue from; wins over --init-mae
    layer_decay: float = 0.75  # encoder block i of L gets lr * layer_decay ** (L - i)
    label_smoothing: float = 0.1
    ss_start: float = 0.3  # scheduled sampling starts at this fraction of `steps`
    ss_ramp: float = 0.5  # ... and reaches p_tf_min / tau_end after this further fraction
    p_tf_min: float = 0.6  # final teacher-forcing probability
    tau_start: float = 1.0  # Gumbel-softmax temperature at the ramp start
    tau_end: float = 0.3
    gumbel_hard: bool = False  # straight-through one-hot instead of soft mixtures
    # Against a decoder that writes plausible LMX without looking at the image (what five CPU runs
    # of the linear-stem model converged to: identical output for every system):
    token_dropout: float = 0.0  # chance a gold input token (after <bos>) is replaced by <pad> (word dropout)
    aux_symbols: float = 0.0  # weight of the encoder's symbol-presence loss (per-patch logits, max over patches)
    aux_recon: float = 0.0  # weight of the encoder's patch-reconstruction loss (keeps its output from collapsing)
    aux_ctc: float = 0.0  # weight of the encoder's reading-order CTC loss (names the notes patch column by column)
    aux_notes: float = 0.0  # weight of the encoder's note-map loss (which pitches' noteheads each patch holds; Verovio renders only)
    aux_header: float = 0.0  # weight of the header head's key/time-signature loss; > 0 adds the head to the model
    detach_memory: bool = False  # the decoder's loss does not reach the encoder (only the auxiliary losses train it)
    # Short labels the prefix cannot give away (acai_omr.data.measures):
    crop_measures: float = 0.0  # share of training items cut at barlines to a few measures and their LMX
    crop_max_measures: int = 2  # a crop holds 1..this many consecutive measures
    # Few crops hold a system's header (1 in 4 with 4-measure systems) and few systems print a time signature:
    crop_first_share: float = 0.0  # chance a crop starts at the first measure (clefs, key); then systems printing a time signature always do
    image_height: int = 0  # systems resized to this height; 0 = the preset's or the --init-weights' (those carry over)
    pitch_pointer: bool = False  # add the model's PitchPointer (pitch read from the note map where the decoder looks)
    init_note_map: str = ""  # a supervised checkpoint (.pt) whose note-map head starts ours (or the PitchPointer's map)
    pointer_lr_scale: float = 1.0  # the PitchPointer's query, key and gate train at lr x this (they start untrained)
    # a batch whose padded images hold more pixels than this runs as slices, gradients summed (the
    # widest 128-px batch of 32 fits whole; at 192 px the widest outgrew 24 GiB); 0 = never sliced
    micro_batch_pixels: int = 32 * 128 * 2048


@dataclass
class GrpoConfig(ReadingTrainConfig):
    """Reinforcement phase: GRPO on a TEDn-based reward, starting from supervised weights.

    Schedules: every `*_start` value holds for the first `explore_frac` of
    `steps` (exploration), then moves linearly to its `*_end` value, reached at
    `anneal_end_frac` of `steps` and kept afterwards.
    """

    # the shared training settings, with GRPO's own defaults
    out: str = "runs/grpo"  # run folder: last.pt, best.pt, log.jsonl, best_weights/ (kept only if dev TEDn improves)
    steps: int = 2000  # optimizer steps in total
    batch_size: int = 4  # images per step
    lr: float = 1e-5  # peak learning rate
    min_lr_ratio: float = 0.1  # cosine floor as a fraction of the peak
    warmup_steps: int = 20  # linear LR warm-up steps
    weight_decay: float = 0.0  # AdamW weight decay (0: stay near the supervised weights)
    grad_clip: float = 1.0  # gradient-norm clip; 0 = none
    seed: int = 0  # seeds sampling, data order and augmentation
    num_workers: int = 0  # DataLoader worker processes
    log_every: int = 1  # steps between JSONL log records (reward components, schedule values)
    ckpt_every: int = 50  # steps between last.pt checkpoints
    eval_every: int = 200  # steps between greedy dev evaluations (also run before the first and after the last step); 0 = only those two
    # GRPO's own
    init: str = ""  # weights folder (model.safetensors + config.json) the policy starts from; required
    group_size: int = 8  # G: samples drawn per image
    updates_per_rollout: int = 1  # optimizer steps on one batch of samples (>1 makes the ratio clipping bite)
    # objective
    clip_eps: float = 0.2  # PPO clip range of the per-token importance ratio
    adv_eps: float = 1e-4  # advantage = (R - group mean) / (group std + adv_eps)
    beta_start: float = 0.20  # entropy bonus weight (entropy normalised to [0, 1] by ln V)
    beta_end: float = 0.02  # entropy bonus weight at the end of the anneal
    lambda_ce_start: float = 0.05  # teacher-forced cross-entropy on the gold sequence, annealed to lambda_ce_end
    lambda_ce_end: float = 0.0  # cross-entropy weight at the end of the anneal
    # sampling curriculum
    explore_frac: float = 0.1  # fraction of steps held at the *_start values
    anneal_end_frac: float = 0.8  # fraction of steps at which the *_end values are reached
    temperature_start: float = 1.3  # sampling temperature
    temperature_end: float = 1.0  # sampling temperature after the anneal
    top_k_start: int = 40  # sampling top-k (0 = no truncation)
    top_k_end: int = 10  # sampling top-k after the anneal
    max_len_start: int = 256  # generated tokens per sample (capped by the model's max_tokens - 1)
    max_len_end: int = 512  # generated tokens per sample after the anneal
    # reward R = lambda_tedn*TEDn_score + lambda_wf*well_formedness + lambda_f1*F1 - lambda_rep*repeat - lambda_len*len
    lambda_tedn: float = 0.35  # weight of TEDn_score
    lambda_wf: float = 0.10  # weight of well_formedness
    lambda_f1: float = 0.25  # weight of the token F1
    lambda_rep: float = 0.15  # weight of the repeated n-gram penalty
    lambda_len_start: float = 0.02  # length-penalty weight, raised over the curriculum
    lambda_len_end: float = 0.35  # length-penalty weight after the anneal
    tedn_mode: str = "cost"  # cost (absolute tree edit cost) or percent (100 * edit cost / gold cost)
    tedn_flavor: str = "lmx"  # TEDn flavour: lmx or full
    alpha_tedn: float = 0.01  # TEDn_score = exp(-alpha_tedn * TEDn): 0.5 at TEDn ~ 70
    alpha_wf: float = 0.2  # well_formedness = exp(-alpha_wf * soft errors): 0.5 at ~3 errors
    gamma_wf: float = 3.0  # well_formedness = -gamma_wf for an unparseable sample
    len_delta: float = 10.0  # no length penalty within this many tokens of the gold length
    len_tau: float = 100.0  # length penalty reaches 1 at this length difference
    reward_workers: int = 1  # processes scoring rewards; 0 = score in the training process


@dataclass
class DecodeConfig:
    """How systems are decoded: one set of settings for every path (CLI, evaluation, web jobs, workers)."""

    batch_size: int = 8  # systems decoded together (sorted by width, KV-cached)
    beam: int = 1  # beam size; 1 = greedy (what the product serves)
    max_tokens: int = 0  # LMX tokens generated per piece read (a system, or a run of measures); 0 = the model's limit
    constrained: bool = True  # decode following the LMX grammar (always-parseable output)
    read_measures: int = -1  # measures per piece read; -1 = the weights' own, 0 = whole systems
    stop_runaways: bool = True  # close a piece whose measure overruns every real one (inference.decode.RunawayLimits)

    def options(self, model_max_tokens: int | None = None) -> dict:
        """Keyword arguments of `inference.batch.decode_systems` (the token cap fitted to the model's)."""
        max_len = self.max_tokens or None
        if max_len is not None and model_max_tokens is not None:
            max_len = min(max_len, model_max_tokens - 1)
        return {"batch_size": self.batch_size, "beam": self.beam, "max_len": max_len, "constrained": self.constrained,
                "stop_runaways": self.stop_runaways}

    @property
    def pieces(self) -> int | None:
        """`read_measures` for `decode_crops` (None = the weights' own)."""
        return None if self.read_measures < 0 else self.read_measures


@dataclass
class WebConfig:
    """The web app's limits and resources (`create_app` reads it; ACAI_* env vars and app config override)."""

    work_dir: str = ""  # per-job temp folders live here; "" = <system temp>/acai-omr-web
    weights_dir: str = ""  # trained weights folder; "" = $ACAI_WEIGHTS_DIR, else weights/ in the repository
    max_upload_bytes: int = 40 * 1024 * 1024
    max_pixels: int = 60_000_000  # per page (after decoding); larger images are refused as decompression bombs
    max_side: int = 12_000  # longest page side in pixels, checked from the header before decoding
    max_pdf_pages: int = 20
    pdf_dpi: int = 200
    max_systems: int = 60  # boxes per job
    ttl_seconds: int = 3600  # uploads and job folders older than this are removed
    pool_size: int = 1  # inference worker threads (one model shared, read-only)
    render_timeout: int = 120  # seconds per MuseScore call
    render: bool = True  # render PNG/PDF/MIDI with MuseScore (off: MusicXML/LMX only)
    device: str = "cpu"
    decode: DecodeConfig = field(default_factory=DecodeConfig)  # how a job's systems are decoded
    torch_threads: int = 0  # CPU threads torch may use in the web process; 0 = torch's default
    int8: bool = False  # dynamic int8 quantization on CPU: no faster once batched and changes the output: off
    compile: bool = False  # torch.compile the decoder step: same output; 1.1x faster or 1.2x slower by run, ~1 min to compile
    redis_url: str = ""  # "" = jobs run in the web process; redis://host:port/db = through RQ to `acai-omr worker`s
    queue_name: str = "acai-omr"  # RQ queue the web app enqueues to and workers listen on
    job_timeout: int = 600  # seconds a queued job may run on a worker
    job_retries: int = 1  # re-runs of a job whose worker died or failed
    max_streams: int = 4  # progress streams open at once (each holds a server thread); more are told to poll
    stream_seconds: float = 60.0  # a progress stream ends after this long; the browser reconnects or polls
    upload_rate: str = "60 per minute"  # uploads one client address may make ("" = no limit)
    job_rate: str = "30 per minute"  # jobs one client address may start ("" = no limit)
    max_active_jobs: int = 3  # queued or running jobs per client address (0 = no limit)
    proxy_hops: int = 0  # reverse proxies in front (the nginx example: 1); the client address is read from X-Forwarded-For


@dataclass
class DetectConfig:
    """Page understanding (`acai_omr.detect`): input limits and system-detection settings."""

    max_pixels: int = 80_000_000  # per page image or rendered PDF page, checked before decoding
    max_pdf_pages: int = 50  # longer PDFs need explicit --pages
    pdf_dpi: int = 200
    work_max_side: int = 2200  # larger pages are shrunk for detection (boxes stay in page pixels)
    min_work_space: float = 8.0  # ...but not below this staff space in pixels
    perspective: bool = True  # straighten a photographed sheet when its outline is visible
    max_skew_deg: float = 5.0
    max_straightened_skew_deg: float = 2.5  # staff lines slanting more on a straightened sheet: its traced outline was wrong
    curl_spread_deg: float = 2.0  # lines whose slope differs this much across the page: curled, flattened by column
    strip_spaces: float = 8.0  # strip width for staff finding, in staff spaces
    min_line_fill: float = 0.4  # share of a strip each of the five lines must cover
    max_line_thickness: float = 0.45  # staff lines are thinner than this many staff spaces
    left_margin_spaces: float = 3.0  # room for the brace and system start line
    right_margin_spaces: float = 1.0
    edge_margin_spaces: float = 7.0  # how far above the first / below the last system ink is followed
    blank_run_spaces: float = 2.0  # a blank band this tall ends that search
    show_through_share: float = 0.7  # ink fainter than this share of the staff lines' contrast is the reverse's ghost (0 = keep all)
    grain_blank_share: float = 0.15  # ink covering more of the blank between staves is paper grain: box from a smoothed page (0 = never)
    grain_speck_density: float = 4.0  # so are more small blobs than this per 100 square spaces of that blank (lyrics count too)
    grain_row_sigma_spaces: float = 1.5  # a grainy page where next to no staff is found is read again blurred along rows by this (0 = never)
    grain_min_noise: float = 4.0  # ...when its paper's pixel noise (grey levels, a standard deviation) is at least this


@dataclass
class DataBuildConfig:
    """`acai-omr data build`: which pieces, how many systems, which engravers."""

    out: str = "data"  # dataset root; each split goes to <out>/<split>/ (manifest.jsonl, shards/)
    split: str = "train"  # train or dev (pieces never cross splits)
    systems: int = 50_000  # stop once the split holds at least this many systems
    workers: int = 2  # rendering processes
    corpora: str = "lieder,polish-keyboard,polish-voice-piano,chopin"  # comma-separated (acai_omr.data.ingest.CORPORA)
    musescore_share: float = 0.25  # fraction of render units engraved by MuseScore 3 (0 when it is not installed)
    musescore_batch: int = 6  # pieces per MuseScore process (its start-up is amortized over them)
    min_staff_space: float = 8.0  # rendered staff space in pixels, drawn per piece in this range
    max_staff_space: float = 14.0
    time_probability: float = 0.05  # chance a later Verovio system restates the time signature (image and gold)
    musescore_time_probability: float = 0.0  # > 0: MuseScore systems broken every 3-5 measures, a break restating the time with this chance
    seed: int = 0
    cache: str = ""  # normalized pieces; "" = <out>/cache/normalized


# ---------------------------------------------------------------- command-line flags from these dataclasses

def _field_comments(config_cls) -> dict[str, str]:
    """The `# comment` after each field in config.py, used as the flag's help (one source of truth)."""
    comments: dict[str, str] = {}
    for cls in reversed(config_cls.__mro__):
        if not dataclasses.is_dataclass(cls):
            continue
        try:
            source = inspect.getsource(cls)
        except (OSError, TypeError):
            continue
        for match in re.finditer(r"^\s+(\w+): [^=\n]+=[^#\n]+#\s*(.+)$", source, re.MULTILINE):
            comments[match.group(1)] = match.group(2).replace("%", "%%")
    return comments


def add_config_flags(parser: argparse.ArgumentParser, config_cls) -> None:
    """One --flag per dataclass field, typed and defaulted from the dataclass."""
    defaults = config_cls()
    comments = _field_comments(config_cls)
    for field in dataclasses.fields(config_cls):
        default = getattr(defaults, field.name)
        flag = "--" + field.name.replace("_", "-")
        help_text = comments.get(field.name, "")
        if isinstance(default, bool):
            parser.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction, default=default,
                                help=help_text)
        else:
            parser.add_argument(flag, dest=field.name, type=type(default), default=default,
                                metavar=type(default).__name__.upper(), help=help_text)


def config_from_args(config_cls, args):
    return config_cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls)})
