rule augment_demographics:
    input:
        manifest=f"results/manifests/{EMOTION_DATASET}.parquet",
        group_labels=rules.group_labels.output.labels,
        modules=package_modules("augment_demographics"),
    output:
        augmented=AUGMENTED_SET,
        cells=f"results/augmented/{EMOTION_DATASET}/{{strategy}}_cells.csv",
    params:
        augmentation=strategy_params,
        seed=config["seed"],
    log:
        "logs/augment_demographics/{strategy}.log",
    benchmark:
        "logs/benchmarks/augment_demographics/{strategy}.tsv"
    wildcard_constraints:
        strategy="|".join(AUGMENTATION_STRATEGIES),
    threads: 1
    resources:
        mem_mb=retry_scaled(2000),
        runtime=retry_scaled(15),
    conda:
        "../../envs/fairfer.yaml"
    script:
        "../../scripts/augment_demographics.py"


rule train_model:
    input:
        unpack(training_inputs),
        modules=package_modules("train_model"),
    output:
        checkpoint="results/models/{model}/{strategy}/seed-{seed}/model.pt",
        history="results/models/{model}/{strategy}/seed-{seed}/history.csv",
        predictions=PREDICTIONS,
        # The validation split's posteriors: what late fusion is fitted on.
        valid_predictions=VALID_PREDICTIONS,
    params:
        model=model_params,
        strategy=strategy_params,
        runtime={
            key: config["training"][key] for key in ("device", "mixed_precision")
        },
        # Fine-tuning epochs when the strategy starts from the baseline (training.init).
        finetune_epochs=lambda wildcards: (
            config["training"]["finetune_epochs"]
            if config["training"]["init"] == "baseline" and wildcards.strategy != BASELINE
            else None
        ),
    log:
        "logs/train_model/{model}/{strategy}/seed-{seed}.log",
    benchmark:
        "logs/benchmarks/train_model/{model}/{strategy}/seed-{seed}.tsv"
    wildcard_constraints:
        model="|".join(TRAINED_MODELS),
        strategy="|".join(TRAINED_STRATEGIES),
        seed=r"\d+",
    threads: config["training"]["threads"]
    resources:
        mem_mb=retry_scaled(training_memory_mb),
        runtime=retry_scaled(600),
        # Lets --resources gpu=N cap the jobs that share the GPUs.
        gpu=int(config["training"]["device"] == "cuda"),
    conda:
        "../../envs/fairfer.yaml"
    script:
        "../../scripts/train_model.py"


rule postprocess_predictions:
    input:
        valid=postprocess_base("valid"),
        test=postprocess_base("test"),
        modules=package_modules("postprocess_predictions"),
    output:
        predictions=PREDICTIONS,
        report="results/models/{model}/{strategy}/seed-{seed}/postprocess.json",
    params:
        strategy=strategy_params,
    log:
        "logs/postprocess_predictions/{model}/{strategy}/seed-{seed}.log",
    benchmark:
        "logs/benchmarks/postprocess_predictions/{model}/{strategy}/seed-{seed}.tsv"
    wildcard_constraints:
        model="|".join(MODELS),
        strategy="|".join(POSTPROCESS_STRATEGIES) or "(?!)",
        seed=r"\d+",
    threads: 1
    resources:
        mem_mb=retry_scaled(1000),
        runtime=retry_scaled(10),
    conda:
        "../../envs/fairfer.yaml"
    script:
        "../../scripts/postprocess_predictions.py"
