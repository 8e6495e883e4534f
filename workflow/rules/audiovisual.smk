# The audio-visual branch (emotion_dataset: cremad): clips are decoded into sampled frames
# (aligned and embedded by faces.smk as the dataset "<dataset>_frames") and voice features;
# clip_inputs joins both per clip for the audio, visual and early-fusion models, which
# train_model trains under every strategy; fuse_predictions makes the late-fusion model. The
# per-model tables and strategy comparison are the usual ones (fairness.smk); this file adds
# the modality comparison and the crowd's own accuracy per group.


rule ingest_cremad:
    input:
        root=dataset_folder("cremad"),
        modules=package_modules("ingest_cremad"),
    output:
        manifest="results/manifests/cremad.parquet",
        report="results/manifests/cremad_report.json",
        rejects="results/manifests/cremad_rejects.parquet",
        frames="results/manifests/cremad_frames.parquet",
        frames_report="results/manifests/cremad_frames_report.json",
        frames_rejects="results/manifests/cremad_frames_rejects.parquet",
        clips="results/clips/cremad/clips.parquet",
    params:
        root=dataset_root("cremad"),
        cremad=config["datasets"]["cremad"],
        seed=config["seed"],
        attributes={
            "extra": EXTRA_ATTRIBUTES,
            "binning": config["fairness"]["binning"],
            "value_aliases": config["fairness"]["value_aliases"],
        },
        checks=ingest_checks(),
    log:
        "logs/ingest_cremad.log",
    benchmark:
        "logs/benchmarks/ingest_cremad.tsv"
    threads: 1
    resources:
        mem_mb=retry_scaled(6000),
        runtime=retry_scaled(60),
    conda:
        "../../envs/fairfer.yaml"
    script:
        "../../scripts/ingest_cremad.py"


rule audio_features:
    input:
        root=dataset_folder("cremad"),
        clips="results/clips/{dataset}/clips.parquet",
        modules=package_modules("audio_features"),
    output:
        features="results/audio/{dataset}.parquet",
    params:
        root=dataset_root("cremad"),
        audio=config["audio"],
    log:
        "logs/audio_features/{dataset}.log",
    benchmark:
        "logs/benchmarks/audio_features/{dataset}.tsv"
    wildcard_constraints:
        dataset="|".join(AUDIOVISUAL_DATASETS),
    threads: 1
    resources:
        mem_mb=retry_scaled(3000),
        runtime=retry_scaled(60),
    conda:
        "../../envs/fairfer.yaml"
    script:
        "../../scripts/audio_features.py"


rule clip_inputs:
    input:
        clips="results/clips/{dataset}/clips.parquet",
        manifest="results/manifests/{dataset}.parquet",
        ingest_report="results/manifests/{dataset}_report.json",
        embeddings=lambda wildcards: shard_files(EMBEDDED_SHARD, f"{wildcards.dataset}_frames"),
        audio="results/audio/{dataset}.parquet",
        modules=package_modules("clip_inputs"),
    output:
        inputs="results/clips/{dataset}/inputs.parquet",
        report="results/clips/{dataset}/report.json",
    log:
        "logs/clip_inputs/{dataset}.log",
    benchmark:
        "logs/benchmarks/clip_inputs/{dataset}.tsv"
    wildcard_constraints:
        dataset="|".join(AUDIOVISUAL_DATASETS),
    threads: 1
    resources:
        mem_mb=retry_scaled(4000),
        runtime=retry_scaled(20),
    conda:
        "../../envs/fairfer.yaml"
    script:
        "../../scripts/clip_inputs.py"


rule fuse_predictions:
    input:
        valid=fusion_components("valid"),
        test=fusion_components("test"),
        modules=package_modules("fuse_predictions"),
    output:
        predictions=PREDICTIONS,
        valid_predictions=VALID_PREDICTIONS,
        report="results/models/{model}/{strategy}/seed-{seed}/fusion.json",
    params:
        model=model_params,
    log:
        "logs/fuse_predictions/{model}/{strategy}/seed-{seed}.log",
    benchmark:
        "logs/benchmarks/fuse_predictions/{model}/{strategy}/seed-{seed}.tsv"
    wildcard_constraints:
        model="|".join(LATE_FUSION_MODELS) or "(?!)",
        strategy="|".join(TRAINED_STRATEGIES),
        seed=r"\d+",
    threads: 1
    resources:
        mem_mb=retry_scaled(1000),
        runtime=retry_scaled(10),
    conda:
        "../../envs/fairfer.yaml"
    script:
        "../../scripts/fuse_predictions.py"


rule compare_modalities:
    input:
        predictions=run_files(PREDICTIONS),
        group_labels=rules.group_labels.output.labels,
        modules=package_modules("compare_modalities"),
    output:
        table=multiext("results/fairness/modality_comparison", ".parquet", ".csv", ".md"),
        by_seed=multiext(
            "results/fairness/modality_comparison_by_seed", ".parquet", ".csv", ".md"
        ),
    params:
        references=config["audiovisual"]["references"],
        attributes=config["fairness"]["attributes"],
        uncertainty=config["fairness"]["uncertainty"],
        seed=config["seed"],
        min_group_size=config["fairness"]["min_group_size"],
    log:
        "logs/compare_modalities.log",
    benchmark:
        "logs/benchmarks/compare_modalities.tsv"
    threads: 1
    resources:
        mem_mb=retry_scaled(3000),
        runtime=retry_scaled(30),
    conda:
        "../../envs/fairfer.yaml"
    script:
        "../../scripts/compare_modalities.py"


rule crowd_accuracy:
    input:
        root=dataset_folder("cremad"),
        clips="results/clips/cremad/clips.parquet",
        manifest="results/manifests/cremad.parquet",
        inputs="results/clips/cremad/inputs.parquet",
        modules=package_modules("crowd_accuracy"),
    output:
        table=multiext("results/fairness/crowd_accuracy", ".parquet", ".csv", ".md"),
    params:
        root=dataset_root("cremad"),
        attributes=config["fairness"]["attributes"],
        uncertainty=config["fairness"]["uncertainty"],
        seed=config["seed"],
        min_group_size=config["fairness"]["min_group_size"],
        binning=config["fairness"]["binning"],
        value_aliases=config["fairness"]["value_aliases"],
    log:
        "logs/crowd_accuracy.log",
    benchmark:
        "logs/benchmarks/crowd_accuracy.tsv"
    threads: 1
    resources:
        mem_mb=retry_scaled(2000),
        runtime=retry_scaled(15),
    conda:
        "../../envs/fairfer.yaml"
    script:
        "../../scripts/crowd_accuracy.py"
