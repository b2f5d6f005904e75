"""Image generation (issue 8) end to end: the seed's ``generate_image`` as written, the
Stability, Stable Image and Titan bodies, model import by CLI and by CreateModelImportJob,
guardrails on image prompts, and the errors.

No real image weights can be fetched here, so every test runs the full diffusion pipeline
on a *tiny random-weight model* in the diffusers layout, written by
``basalt models write-test-diffusion-model`` (``--sdxl`` for the SDXL architecture; no binary
in git). Its images are noise; the tests check what does not depend on weights: valid PNGs of
the requested size, determinism per seed, and that the prompt, negative prompt and seed
change the output.
"""

from __future__ import annotations

import base64
import json
import shutil
import struct
import time
import zlib

import pytest
from botocore.exceptions import ClientError

import harness

SDXL = "stability.stable-diffusion-xl-v1"
TITAN = "amazon.titan-image-generator-v2:0"
CORE = "stability.stable-image-core-v1:1"


def png_size(data: bytes) -> tuple[int, int]:
    """Checks the PNG whole (signature, chunk CRCs, pixel data length) and returns its size."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, width, height, idat = 8, 0, 0, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        tag, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(tag + body) == crc, f"bad CRC in {tag!r}"
        if tag == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert (depth, colour) == (8, 2), "expected 8-bit RGB"
        elif tag == b"IDAT":
            idat += body
        pos += 12 + length
    assert len(zlib.decompress(idat)) == height * (1 + 3 * width)
    return width, height


def sdxl_body(prompt="a red cat in the snow", negative="", seed=7, steps=10, **extra) -> str:
    return json.dumps({
        "text_prompts": [{"text": prompt, "weight": 1.0}, {"text": negative, "weight": -1.0}],
        "cfg_scale": 7, "seed": seed, "steps": steps, "width": 1024, "height": 1024, **extra,
    })


def invoke(client, model_id: str, body: str, **kwargs) -> tuple[dict, dict]:
    resp = client.invoke_model(modelId=model_id, contentType="application/json",
                               accept="application/json", body=body, **kwargs)
    return json.loads(resp["body"].read()), resp["ResponseMetadata"]["HTTPHeaders"]


@pytest.fixture(scope="module")
def image_server(start_server, tmp_path_factory):
    """A server whose model cache holds the default models (linked) and the tiny
    diffusion model imported for the SDXL and Titan Image IDs."""
    root = tmp_path_factory.mktemp("images")
    models = harness.linked_models_dir(root)
    tiny = root / "tiny"
    cli = harness.BasaltServer(root / "cli", "cli", {"BASALT_MODELS_DIR": str(models)})
    cli.cli("models", "write-test-diffusion-model", str(tiny))
    for model_id in (SDXL, TITAN):
        cli.cli("models", "import", "--id", model_id, "--from", str(tiny), timeout=120)
    srv = start_server("images", BASALT_MODELS_DIR=str(models))
    srv.tiny = tiny
    srv.models = models
    return srv


def test_the_seeds_generate_image_writes_a_1024_png(image_server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with harness.seed_pointed_at(image_server, tmp_path / "env") as seed:
        path = seed.generate_image("a castle on a mountain at sunset", "blurry", seed=42)
    data = (tmp_path / path).read_bytes()
    assert png_size(data) == (1024, 1024)


def test_a_seed_repeats_and_seeds_prompts_and_negative_prompts_differ(image_server):
    client = image_server.client(read_timeout=300)
    first, headers = invoke(client, SDXL, sdxl_body(seed=11))
    again, _ = invoke(client, SDXL, sdxl_body(seed=11))
    other_seed, _ = invoke(client, SDXL, sdxl_body(seed=12))
    negative, _ = invoke(client, SDXL, sdxl_body(seed=11, negative="dark night"))
    prompt, _ = invoke(client, SDXL, sdxl_body(prompt="a green tree", seed=11))
    art = first["artifacts"][0]
    assert first["result"] == "success"
    assert (art["seed"], art["finishReason"]) == (11, "SUCCESS")
    assert png_size(base64.b64decode(art["base64"])) == (1024, 1024)
    assert again["artifacts"][0]["base64"] == art["base64"]
    for changed in (other_seed, negative, prompt):
        assert changed["artifacts"][0]["base64"] != art["base64"]
    assert int(headers["x-amzn-bedrock-invocation-latency"]) > 0


def test_the_euler_samplers_run_and_repeat_their_seed(image_server):
    client = image_server.client(read_timeout=300)
    ddim, _ = invoke(client, SDXL, sdxl_body(seed=13))
    seen = {ddim["artifacts"][0]["base64"]}
    for sampler in ("K_EULER", "K_EULER_ANCESTRAL"):
        first, _ = invoke(client, SDXL, sdxl_body(seed=13, sampler=sampler))
        again, _ = invoke(client, SDXL, sdxl_body(seed=13, sampler=sampler))
        image = first["artifacts"][0]["base64"]
        assert png_size(base64.b64decode(image)) == (1024, 1024)
        assert again["artifacts"][0]["base64"] == image, sampler
        seen.add(image)
    assert len(seen) == 3, "each sampler makes its own image"


def test_seed_zero_picks_a_seed_and_reports_it(image_server):
    client = image_server.client(read_timeout=300)
    body, _ = invoke(client, SDXL, sdxl_body(seed=0))
    reported = body["artifacts"][0]["seed"]
    assert 0 < reported <= 4294967295
    # The reported seed makes the same image again.
    again, _ = invoke(client, SDXL, sdxl_body(seed=reported))
    assert again["artifacts"][0]["base64"] == body["artifacts"][0]["base64"]


def test_titan_image_bodies_get_titan_responses(image_server):
    client = image_server.client(read_timeout=300)
    body, _ = invoke(client, TITAN, json.dumps({
        "taskType": "TEXT_IMAGE",
        "textToImageParams": {"text": "a blue robot in the city", "negativeText": "blurry"},
        "imageGenerationConfig": {"numberOfImages": 2, "height": 512, "width": 512,
                                  "cfgScale": 8.0, "seed": 5},
    }))
    assert body["error"] is None
    assert len(body["images"]) == 2
    images = [base64.b64decode(i) for i in body["images"]]
    assert [png_size(i) for i in images] == [(512, 512), (512, 512)]
    assert images[0] != images[1], "each image gets its own seed"


def test_image_to_image_starts_from_the_init_image(image_server):
    client = image_server.client(read_timeout=300)
    gradient = base64.b64encode(harness.make_png(512, 384)).decode()
    body = {"text_prompts": [{"text": "a red cat"}], "init_image": gradient,
            "image_strength": 0.5, "steps": 10, "seed": 9}
    first, _ = invoke(client, SDXL, json.dumps(body))
    image = base64.b64decode(first["artifacts"][0]["base64"])
    assert png_size(image) == (512, 384), "image-to-image keeps the init image's size"
    again, _ = invoke(client, SDXL, json.dumps(body))
    assert again["artifacts"][0]["base64"] == first["artifacts"][0]["base64"]
    stronger, _ = invoke(client, SDXL, json.dumps({**body, "image_strength": 0.9}))
    assert stronger["artifacts"][0]["base64"] != first["artifacts"][0]["base64"]
    kept, _ = invoke(client, SDXL, json.dumps({**body, "image_strength": 1.0}))
    assert png_size(base64.b64decode(kept["artifacts"][0]["base64"])) == (512, 384)
    # Titan's IMAGE_VARIATION is image-to-image from its one image.
    variation, _ = invoke(client, TITAN, json.dumps({
        "taskType": "IMAGE_VARIATION",
        "imageVariationParams": {"images": [gradient], "text": "a red cat",
                                 "similarityStrength": 0.8},
        "imageGenerationConfig": {"seed": 4},
    }))
    assert variation["error"] is None
    assert png_size(base64.b64decode(variation["images"][0])) == (512, 384)
    # SD3's form: mode image-to-image with image and strength (Core has no import here).
    with pytest.raises(ClientError) as e:
        invoke(client, CORE, json.dumps({"prompt": "a cat", "mode": "image-to-image",
                                         "image": gradient, "strength": 0.5}))
    assert harness.error_code(e.value) == "AccessDeniedException"
    for bad, word in [
        ({**body, "init_image": base64.b64encode(harness.make_png(100, 100)).decode()}, "64"),
        ({**body, "init_image": base64.b64encode(b"not an image").decode()}, "image"),
        ({**body, "init_image": "%%%"}, "base64"),
        ({**body, "image_strength": 1.5}, "image_strength"),
    ]:
        with pytest.raises(ClientError) as e:
            invoke(client, SDXL, json.dumps(bad))
        assert harness.error_code(e.value) == "ValidationException"
        assert word in harness.error_message(e.value), harness.error_message(e.value)


def test_an_id_with_no_imported_model_says_how_to_import_one(image_server):
    client = image_server.client()
    with pytest.raises(ClientError) as e:
        invoke(client, CORE, json.dumps({"prompt": "a cat", "aspect_ratio": "16:9"}))
    assert harness.error_code(e.value) == "AccessDeniedException"
    assert harness.http_status(e.value) == 403
    message = harness.error_message(e.value)
    assert message.startswith("You don't have access to the model with the specified model ID.")
    assert f"basalt models import --id {CORE}" in message


def test_image_requests_are_validated(image_server):
    client = image_server.client()
    cases = [
        (SDXL, sdxl_body(width=1000, height=1000), "1000x1000"),
        (SDXL, sdxl_body(steps=5), "steps"),
        (SDXL, sdxl_body(sampler="K_DPMPP_2M"), "sampler"),
        (TITAN, json.dumps({"taskType": "INPAINTING"}), "TEXT_IMAGE"),
        (SDXL, "{not json", ""),
    ]
    for model_id, body, word in cases:
        with pytest.raises(ClientError) as e:
            invoke(client, model_id, body)
        assert harness.error_code(e.value) == "ValidationException", body
        assert word in harness.error_message(e.value), harness.error_message(e.value)
    with pytest.raises(ClientError) as e:
        client.invoke_model_with_response_stream(modelId=SDXL, body=sdxl_body())
    assert harness.error_code(e.value) == "ValidationException"
    with pytest.raises(ClientError) as e:
        client.converse(modelId=SDXL, messages=[{"role": "user", "content": [{"text": "hi"}]}])
    assert harness.error_code(e.value) == "ValidationException"


def test_image_models_are_listed_with_the_image_modality(image_server):
    control = image_server.client("bedrock")
    listed = control.list_foundation_models(byOutputModality="IMAGE")["modelSummaries"]
    ids = {m["modelId"] for m in listed}
    assert {SDXL, TITAN, CORE, "amazon.nova-canvas-v1:0"} <= ids
    assert all(not m["responseStreamingSupported"] for m in listed)


def test_a_guardrail_checks_the_image_prompt(image_server):
    control = image_server.client("bedrock")
    g = control.create_guardrail(
        name="no-castles",
        wordPolicyConfig={"wordsConfig": [{"text": "castle"}]},
        blockedInputMessaging="That prompt is not allowed.",
        blockedOutputsMessaging="That image is not allowed.",
    )
    client = image_server.client(read_timeout=300)
    blocked, headers = invoke(client, SDXL, sdxl_body(prompt="a castle on a hill"),
                              guardrailIdentifier=g["guardrailId"], guardrailVersion="DRAFT")
    assert blocked["amazon-bedrock-guardrailAction"] == "INTERVENED"
    assert headers["amazon-bedrock-guardrailaction"] == "INTERVENED"
    assert blocked["artifacts"][0]["finishReason"] == "CONTENT_FILTERED"
    assert blocked["artifacts"][0]["base64"] == ""
    titan, _ = invoke(client, TITAN, json.dumps({
        "taskType": "TEXT_IMAGE", "textToImageParams": {"text": "a castle"},
        "imageGenerationConfig": {"height": 512, "width": 512, "seed": 1},
    }), guardrailIdentifier=g["guardrailId"], guardrailVersion="DRAFT")
    assert (titan["images"], titan["error"]) == ([], "That prompt is not allowed.")
    allowed, _ = invoke(client, SDXL, sdxl_body(prompt="a red cat"),
                        guardrailIdentifier=g["guardrailId"], guardrailVersion="DRAFT")
    assert allowed["amazon-bedrock-guardrailAction"] == "NONE"
    assert png_size(base64.b64decode(allowed["artifacts"][0]["base64"])) == (1024, 1024)


def test_cli_import_errors_name_the_file(image_server, tmp_path):
    cli = harness.BasaltServer(tmp_path / "cli", "cli", {"BASALT_MODELS_DIR": str(tmp_path / "m")})
    missing = tmp_path / "missing"
    shutil.copytree(image_server.tiny, missing)
    (missing / "vae/diffusion_pytorch_model.safetensors").unlink()
    out = cli.cli("models", "import", "--id", SDXL, "--from", str(missing), check=False)
    assert out.returncode != 0
    assert "vae/diffusion_pytorch_model.safetensors" in out.stderr
    shape = tmp_path / "shape"
    shutil.copytree(image_server.tiny, shape)
    config = shape / "text_encoder/config.json"
    config.write_text(config.read_text().replace('"hidden_size": 32', '"hidden_size": 48'))
    unet = shape / "unet/config.json"
    unet.write_text(unet.read_text().replace('"cross_attention_dim": 32', '"cross_attention_dim": 48'))
    out = cli.cli("models", "import", "--id", SDXL, "--from", str(shape), check=False)
    assert out.returncode != 0
    assert "text_encoder/model.safetensors" in out.stderr and "shape" in out.stderr
    wrong_kind = cli.cli("models", "import", "--id", "anthropic.claude-3-haiku-20240307-v1:0",
                         "--from", str(image_server.tiny), check=False)
    assert wrong_kind.returncode != 0 and "Diffusion" in wrong_kind.stderr
    assert not (tmp_path / "m" / "imported").exists() or not any(
        p for p in (tmp_path / "m" / "imported").iterdir() if not p.name.startswith("."))


def test_an_sdxl_architecture_folder_serves_the_seeds_sdxl_body(start_server, tmp_path, monkeypatch):
    """The tiny SDXL-architecture fixture (two text encoders, pooled embedding, size
    conditioning) imported for the SDXL ID runs the seed's body at 1024x1024, 50 steps."""
    models = harness.linked_models_dir(tmp_path)
    xl = tmp_path / "tiny-sdxl"
    cli = harness.BasaltServer(tmp_path / "cli", "cli", {"BASALT_MODELS_DIR": str(models)})
    cli.cli("models", "write-test-diffusion-model", "--sdxl", str(xl))
    assert (xl / "text_encoder_2/model.safetensors").is_file()
    # A missing second-encoder file is named, and nothing is imported.
    broken = tmp_path / "broken"
    shutil.copytree(xl, broken)
    (broken / "text_encoder_2/model.safetensors").unlink()
    out = cli.cli("models", "import", "--id", SDXL, "--from", str(broken), check=False)
    assert out.returncode != 0 and "text_encoder_2/model.safetensors" in out.stderr
    cli.cli("models", "import", "--id", SDXL, "--from", str(xl), timeout=120)
    srv = start_server("images-sdxl", BASALT_MODELS_DIR=str(models))

    monkeypatch.chdir(tmp_path)
    with harness.seed_pointed_at(srv, tmp_path / "env") as seed:
        path = seed.generate_image("a castle on a mountain at sunset", "blurry", seed=42)
    assert png_size((tmp_path / path).read_bytes()) == (1024, 1024)

    client = srv.client(read_timeout=300)
    first, _ = invoke(client, SDXL, sdxl_body(seed=21))
    again, _ = invoke(client, SDXL, sdxl_body(seed=21))
    other, _ = invoke(client, SDXL, sdxl_body(seed=22))
    negative, _ = invoke(client, SDXL, sdxl_body(seed=21, negative="dark night"))
    art = first["artifacts"][0]
    assert (first["result"], art["seed"], art["finishReason"]) == ("success", 21, "SUCCESS")
    assert png_size(base64.b64decode(art["base64"])) == (1024, 1024)
    assert again["artifacts"][0]["base64"] == art["base64"]
    for changed in (other, negative):
        assert changed["artifacts"][0]["base64"] != art["base64"]


# SDXL-Turbo's published scheduler/scheduler_config.json.
TURBO_SCHEDULER = {
    "_class_name": "EulerAncestralDiscreteScheduler", "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
    "interpolation_type": "linear", "num_train_timesteps": 1000, "prediction_type": "epsilon",
    "sample_max_value": 1.0, "set_alpha_to_one": False, "skip_prk_steps": True,
    "steps_offset": 1, "timestep_spacing": "trailing", "trained_betas": None,
    "use_karras_sigmas": False,
}


def test_an_sdxl_turbo_folder_sets_the_defaults_a_body_leaves_out(start_server, tmp_path):
    """A folder with SDXL-Turbo's scheduler config (Euler ancestral, trailing timesteps) runs
    what a body leaves out as Turbo runs: the Stable Image body (no steps field) at 1 step
    without guidance, the SDXL body at its fewest allowed steps (10) without guidance, both
    with Euler ancestral. Each image must equal the CLI's run of those exact settings."""
    models = harness.linked_models_dir(tmp_path)
    turbo = tmp_path / "tiny-sdxl-turbo"
    cli = harness.BasaltServer(tmp_path / "cli", "cli", {"BASALT_MODELS_DIR": str(models)})
    cli.cli("models", "write-test-diffusion-model", "--sdxl", str(turbo))
    (turbo / "scheduler/scheduler_config.json").write_text(json.dumps(TURBO_SCHEDULER))
    for model_id in (CORE, SDXL):
        cli.cli("models", "import", "--id", model_id, "--from", str(turbo), timeout=120)
    srv = start_server("images-turbo", BASALT_MODELS_DIR=str(models))

    def cli_image(steps: int, cfg: float, sampler: str, seed: int) -> bytes:
        out = tmp_path / f"cli-{steps}-{cfg}-{sampler}-{seed}.png"
        cli.cli("images", "generate", "--model", str(turbo), "--prompt", "a red cat",
                "--width", "1024", "--height", "1024", "--steps", str(steps),
                "--cfg-scale", str(cfg), "--sampler", sampler, "--seed", str(seed),
                "--out", str(out), timeout=120)
        return out.read_bytes()

    client = srv.client(read_timeout=300)
    core, _ = invoke(client, CORE, json.dumps({"prompt": "a red cat", "seed": 5}))
    image = base64.b64decode(core["images"][0])
    assert (core["seeds"], png_size(image)) == ([5], (1024, 1024))
    assert image == cli_image(1, 0, "euler-ancestral", 5), "1 step, no guidance, Euler a"
    # The CLI, given no steps, guidance or sampler, takes the same model defaults.
    defaults_out = tmp_path / "cli-defaults.png"
    cli.cli("images", "generate", "--model", str(turbo), "--prompt", "a red cat",
            "--width", "1024", "--height", "1024", "--seed", "5", "--out", str(defaults_out), timeout=120)
    assert defaults_out.read_bytes() == image
    assert image != cli_image(1, 7, "euler-ancestral", 5)

    body = json.dumps({"text_prompts": [{"text": "a red cat"}], "seed": 6})
    sdxl, _ = invoke(client, SDXL, body)
    image = base64.b64decode(sdxl["artifacts"][0]["base64"])
    assert image == cli_image(10, 0, "euler-ancestral", 6), "10 steps, no guidance, Euler a"
    # What the body names wins, and Bedrock's SDXL limits still hold on a Turbo folder.
    named, _ = invoke(client, SDXL, json.dumps({
        "text_prompts": [{"text": "a red cat"}], "seed": 6, "steps": 10, "cfg_scale": 7,
        "sampler": "K_EULER"}))
    assert base64.b64decode(named["artifacts"][0]["base64"]) == cli_image(10, 7, "euler", 6)
    with pytest.raises(ClientError) as e:
        invoke(client, SDXL, json.dumps({"text_prompts": [{"text": "a"}], "steps": 1}))
    assert harness.error_code(e.value) == "ValidationException"
    assert "steps" in harness.error_message(e.value)


def wait_for_job(control, arn: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = control.get_model_import_job(jobIdentifier=arn)
        if job["status"] != "InProgress":
            return job
        time.sleep(0.5)
    raise AssertionError(f"import job {arn} still running after {timeout} s")


def test_create_model_import_job_from_a_bucket_serves_the_imported_arn(image_server):
    bucket = image_server.data_dir / "s3" / "model-artifacts"
    shutil.copytree(image_server.tiny, bucket / "sd" / "tiny")
    control = image_server.client("bedrock")
    role = "arn:aws:iam::123456789012:role/BedrockImport"
    arn = control.create_model_import_job(
        jobName="import-tiny-sd", importedModelName="tiny-sd", roleArn=role,
        modelDataSource={"s3DataSource": {"s3Uri": "s3://model-artifacts/sd/tiny/"}},
        clientRequestToken="tok-1",
    )["jobArn"]
    assert ":model-import-job/" in arn
    job = wait_for_job(control, arn)
    assert job["status"] == "Completed", job.get("failureMessage")
    assert job["jobName"] == "import-tiny-sd" and job["roleArn"] == role
    model_arn = job["importedModelArn"]
    assert model_arn.startswith("arn:aws:bedrock:us-east-1:") and ":imported-model/" in model_arn
    assert control.get_model_import_job(jobIdentifier="import-tiny-sd")["jobArn"] == arn
    # The same token and request replays; a second job under the name conflicts.
    again = control.create_model_import_job(
        jobName="import-tiny-sd", importedModelName="tiny-sd", roleArn=role,
        modelDataSource={"s3DataSource": {"s3Uri": "s3://model-artifacts/sd/tiny/"}},
        clientRequestToken="tok-1",
    )
    assert again["jobArn"] == arn
    with pytest.raises(ClientError) as e:
        control.create_model_import_job(
            jobName="import-tiny-sd", importedModelName="other", roleArn=role,
            modelDataSource={"s3DataSource": {"s3Uri": "s3://model-artifacts/sd/tiny/"}})
    assert harness.error_code(e.value) == "ConflictException"

    model = control.get_imported_model(modelIdentifier=model_arn)
    assert (model["modelName"], model["modelArchitecture"]) == ("tiny-sd", "StableDiffusion")
    assert model["jobArn"] == arn
    names = [m["modelName"] for m in control.list_imported_models()["modelSummaries"]]
    assert "tiny-sd" in names
    jobs = control.list_model_import_jobs(statusEquals="Completed")["modelImportJobSummaries"]
    assert arn in [j["jobArn"] for j in jobs]

    # The imported model answers its ARN (SDXL body) once loaded; botocore retries
    # ModelNotReadyException while it loads.
    client = image_server.client(read_timeout=300, max_attempts=10)
    body, _ = invoke(client, model_arn, sdxl_body(seed=3))
    assert png_size(base64.b64decode(body["artifacts"][0]["base64"])) == (1024, 1024)

    control.delete_imported_model(modelIdentifier="tiny-sd")
    with pytest.raises(ClientError) as e:
        control.get_imported_model(modelIdentifier=model_arn)
    assert harness.error_code(e.value) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as e:
        invoke(image_server.client(), model_arn, sdxl_body())
    assert harness.error_code(e.value) == "ResourceNotFoundException"


def test_a_broken_upload_fails_its_import_job_with_the_file_named(image_server):
    bucket = image_server.data_dir / "s3" / "model-artifacts" / "broken"
    shutil.copytree(image_server.tiny, bucket)
    (bucket / "unet/diffusion_pytorch_model.safetensors").unlink()
    control = image_server.client("bedrock")
    arn = control.create_model_import_job(
        jobName="import-broken", importedModelName="broken-sd",
        roleArn="arn:aws:iam::123456789012:role/BedrockImport",
        modelDataSource={"s3DataSource": {"s3Uri": "s3://model-artifacts/broken/"}},
    )["jobArn"]
    job = wait_for_job(control, arn)
    assert job["status"] == "Failed"
    assert "unet/diffusion_pytorch_model.safetensors" in job["failureMessage"]
    assert "importedModelArn" not in job
    with pytest.raises(ClientError) as e:
        control.create_model_import_job(
            jobName="bad name!", importedModelName="x",
            roleArn="arn:aws:iam::123456789012:role/R",
            modelDataSource={"s3DataSource": {"s3Uri": "s3://model-artifacts/broken/"}})
    assert harness.error_code(e.value) == "ValidationException"
    assert "jobName" in harness.error_message(e.value)
    with pytest.raises(ClientError) as e:
        control.get_model_import_job(jobIdentifier="no-such-job")
    assert harness.error_code(e.value) == "ResourceNotFoundException"


def test_gguf_and_bert_folders_import_beside_a_running_server(image_server):
    """The same import path takes the project's own text and embedding models (real
    weights): a GGUF folder for a Llama ID and a BERT folder for Titan Embeddings V2,
    imported by the CLI while the server runs and picked up on the next request."""
    real = harness.models_dir()
    out = image_server.cli("models", "import", "--id", "meta.llama3-8b-instruct-v1:0",
                           "--from", str(real / "smollm2-135m-instruct"), timeout=300).stdout
    arn = next(w for w in out.split() if ":imported-model/" in w)
    image_server.cli("models", "import", "--id", "amazon.titan-embed-text-v2:0",
                     "--from", str(real / "all-minilm-l6-v2"), timeout=300)
    # Each import loads on the request that first misses it; botocore retries the
    # ModelNotReadyException it gets meanwhile.
    client = image_server.client(max_attempts=10)
    reply = client.converse(modelId="meta.llama3-8b-instruct-v1:0",
                            messages=[{"role": "user", "content": [{"text": "Say hello."}]}],
                            inferenceConfig={"maxTokens": 8})
    assert reply["output"]["message"]["content"][0]["text"].strip()
    body, _ = invoke(client, arn, json.dumps({"prompt": "Hello", "max_gen_len": 8}))
    assert body["generation"] and body["stop_reason"] in ("stop", "length")
    emb, _ = invoke(client, "amazon.titan-embed-text-v2:0", json.dumps({"inputText": "hello"}))
    assert len(emb["embedding"]) == 1024
    listed = image_server.cli("models", "list").stdout
    assert "meta.llama3-8b-instruct-v1:0" in listed and "gguf" in listed
