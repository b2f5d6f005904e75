"""Image generation seconds per denoising step on the tiny random-weight fixtures: Basalt
through InvokeModel (boto3) against the diffusers pipeline on the same folders and threads.

Per-step time comes from two step counts of the same request (the difference over the step
difference), which removes the fixed costs of each image: text encoding, the VAE decode, PNG
encoding and, for Basalt, the HTTP round trip.

  sd    the SD fixture at 512x512, cfg 7, the folder's DDIM. Basalt: the Titan Image body
        (quality standard = 30 steps, premium = 50; the SDXL body allows SDXL sizes only).
  sdxl  the SDXL fixture at 1024x1024, cfg 7, Euler, 10 and 30 steps. Basalt: the SDXL body.
  turbo the SDXL fixture with SDXL-Turbo's scheduler config at 1024x1024: one whole image
        at 1 step without guidance. Basalt: the Stable Image Core body, which leaves steps
        and guidance to the model.

The peer loads each folder with StableDiffusionPipeline / StableDiffusionXLPipeline and the
scheduler its scheduler_config.json names. The fixture's tokenizers are WordLevel
tokenizer.json files (no vocab.json/merges.txt for CLIPTokenizer), so the peer wraps them in
PreTrainedTokenizerFast: same ids, and tokenizing is outside the per-step time anyway. Before
timing, every component's state dict is compared with its safetensors file, tensor by tensor.

Both sides are measured in one process, in turns (Basalt's server idles while the peer runs).
Usage: images.py --dirs SD SDXL TURBO --threads 2 [--runs 3] [--only basalt|diffusers]
(Basalt: AWS_ENDPOINT_URL and credentials in the environment). One JSON object per line.
"""
import argparse
import json
import os
import statistics
import sys
import time

SD_ID = "amazon.titan-image-generator-v2:0"
SDXL_ID = "stability.stable-diffusion-xl-v1"
TURBO_ID = "stability.stable-image-core-v1:1"
PROMPT = "a photo of a red cat in the snow"
SEED = 7


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def basalt_cases():
    """Basalt's three measurements as zero-argument callables, keyed like the peer's."""
    import boto3
    from botocore.config import Config
    c = boto3.client("bedrock-runtime", config=Config(read_timeout=600, retries={"max_attempts": 1}))

    def invoke(model_id, body):
        r = c.invoke_model(modelId=model_id, contentType="application/json",
                           accept="application/json", body=json.dumps(body))
        out = json.loads(r["body"].read())
        images = out.get("images") or [a["base64"] for a in out.get("artifacts", [])]
        assert images and images[0], out

    def sd(quality):
        return lambda: invoke(SD_ID, {
            "taskType": "TEXT_IMAGE", "textToImageParams": {"text": PROMPT},
            "imageGenerationConfig": {"numberOfImages": 1, "width": 512, "height": 512,
                                      "cfgScale": 7.0, "seed": SEED, "quality": quality}})

    def sdxl(steps):
        return lambda: invoke(SDXL_ID, {
            "text_prompts": [{"text": PROMPT}], "cfg_scale": 7, "seed": SEED, "steps": steps,
            "width": 1024, "height": 1024, "sampler": "K_EULER"})

    return {"sd": (sd("standard"), sd("premium")), "sdxl": (sdxl(10), sdxl(30)),
            "turbo": lambda: invoke(TURBO_ID, {"prompt": PROMPT, "seed": SEED, "aspect_ratio": "1:1"})}


def check_same_weights(pipe, folder):
    """Every tensor of every component equals the fixture's file (none missing or extra)."""
    from safetensors.torch import load_file
    import torch
    for name in ("text_encoder", "text_encoder_2", "unet", "vae"):
        module = getattr(pipe, name, None)
        if module is None:
            continue
        files = [f for f in os.listdir(os.path.join(folder, name)) if f.endswith(".safetensors")]
        assert len(files) == 1, files
        saved = load_file(os.path.join(folder, name, files[0]))
        state = module.state_dict()
        # transformers 5's CLIPTextModel holds the layers without the file's `text_model.`
        # prefix (its loader renames them).
        saved = {k if k in state else k.removeprefix("text_model."): v for k, v in saved.items()}
        # The VAE's mid-block attention is saved under the legacy names candle reads;
        # diffusers renames them on load.
        legacy = {".query.": ".to_q.", ".key.": ".to_k.", ".value.": ".to_v.",
                  ".proj_attn.": ".to_out.0."}
        for old, new in legacy.items():
            saved = {k.replace(old, new) if k not in state else k: v for k, v in saved.items()}
        missing, extra = set(saved) - set(state), set(state) - set(saved)
        assert not missing and not extra, f"{name}: missing {sorted(missing)[:5]} extra {sorted(extra)[:5]}"
        for k, v in saved.items():
            assert torch.equal(state[k].to(v.dtype), v), f"{name}: {k} differs"
    return True


def diffusers_cases(dirs, threads):
    """The peer's measurements: the same folders in diffusers' pipelines, `threads` threads."""
    import diffusers
    import torch
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from transformers import PreTrainedTokenizerFast
    torch.set_num_threads(threads)

    def tokenizer(folder, name):
        path = os.path.join(folder, name, "tokenizer.json")
        special = os.path.join(folder, name, "special_tokens_map.json")
        pad = json.load(open(special)).get("pad_token") if os.path.exists(special) else None
        return PreTrainedTokenizerFast(
            tokenizer_file=path, model_max_length=77, bos_token="<|startoftext|>",
            eos_token="<|endoftext|>", unk_token="<|endoftext|>", pad_token=pad or "<|endoftext|>")

    def ready(pipe, folder):
        # The scheduler scheduler_config.json names (model_index.json may name another).
        config = json.load(open(os.path.join(folder, "scheduler", "scheduler_config.json")))
        pipe.scheduler = getattr(diffusers, config["_class_name"]).from_config(config)
        pipe.set_progress_bar_config(disable=True)
        check_same_weights(pipe, folder)
        print(json.dumps({"name": "diffusers", "folder": folder, "same_weights": True,
                          "scheduler": type(pipe.scheduler).__name__,
                          "timestep_spacing": pipe.scheduler.config.timestep_spacing}), flush=True)
        return pipe

    sd_dir, sdxl_dir, turbo_dir = dirs
    sd = ready(StableDiffusionPipeline.from_pretrained(
        sd_dir, tokenizer=tokenizer(sd_dir, "tokenizer"), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False), sd_dir)
    xl, turbo = (ready(StableDiffusionXLPipeline.from_pretrained(
        d, tokenizer=tokenizer(d, "tokenizer"), tokenizer_2=tokenizer(d, "tokenizer_2")), d)
        for d in (sdxl_dir, turbo_dir))

    def run(pipe, steps, size, cfg):
        def go():
            with torch.inference_mode():
                g = torch.Generator().manual_seed(SEED)
                pipe(PROMPT, num_inference_steps=steps, guidance_scale=cfg, height=size,
                     width=size, generator=g).images[0]
        return go

    return {"sd": (run(sd, 30, 512, 7.0), run(sd, 50, 512, 7.0)),
            "sdxl": (run(xl, 10, 1024, 7.0), run(xl, 30, 1024, 7.0)),
            "turbo": run(turbo, 1, 1024, 0.0)}


WHAT = {"sd": ("sd 512x512 s/step (30 vs 50 steps)", (30, 50)),
        "sdxl": ("sdxl 1024x1024 s/step (10 vs 30 steps)", (10, 30)),
        "turbo": ("turbo 1024x1024 s/image (1 step, no guidance)", None)}


def measure(sides, runs):
    """Runs every case of every side in turn, `runs` rounds after a warm-up round, so that a
    change of machine load falls on both sides alike. Per step: (fastest run at the higher
    step count - fastest at the lower) / the step difference (other work on the machine only
    ever adds time, so the fastest runs are the least disturbed), and the median of each
    round's own difference beside it."""
    got = {(side, k): ([], []) for side in sides for k in WHAT}
    for r in range(runs + 1):
        for side, cases in sides.items():
            for k, (_, steps) in WHAT.items():
                lo, hi = cases[k] if steps else (cases[k], None)
                times = (timed(lo), timed(hi) if hi else None)
                if r:
                    got[(side, k)][0].append(times[0])
                    got[(side, k)][1].append(times[1])
    for (side, k), (lo, hi) in got.items():
        what, steps = WHAT[k]
        if steps:
            d = steps[1] - steps[0]
            print(json.dumps({
                "name": side, "what": what, "value": round((min(hi) - min(lo)) / d, 4),
                "median_of_rounds": round(statistics.median((b - a) / d for a, b in zip(lo, hi)), 4),
                "s_at_low": [round(v, 3) for v in lo], "s_at_high": [round(v, 3) for v in hi]}),
                flush=True)
        else:
            print(json.dumps({"name": side, "what": what, "value": round(min(lo), 4),
                              "median": round(statistics.median(lo), 4),
                              "runs": [round(v, 3) for v in lo]}), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dirs", nargs=3, required=True, metavar=("SD", "SDXL", "TURBO"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", choices=("basalt", "diffusers"))
    a = ap.parse_args()
    sides = {}
    if a.only != "diffusers":
        sides["basalt"] = basalt_cases()
    if a.only != "basalt":
        sides["diffusers"] = diffusers_cases(a.dirs, a.threads)
    measure(sides, a.runs)


if __name__ == "__main__":
    sys.exit(main())
