rule augment_demographics:
    input:
        manifest=f"results/manifests/{EMOTION_DATASET}.parquet",
        group_labels=rules.match_race_labels.output.labels,
        modules=package_modules("augment_demographics"),
    output:
        augmented=f"results/augmented/{EMOTION_DATASET}_train.parquet",
        cells="results/augmented/cell_counts.csv",
    params:
        augmentation=config["augmentation"],
        seed=config["seed"],
    log:
        "logs/augment_demographics.log",
    benchmark:
        "logs/benchmarks/augment_demographics.tsv"
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
        checkpoint="results/models/{strategy}/model.pt",
        history="results/models/{strategy}/history.csv",
        predictions=PREDICTIONS,
    params:
        training=config["training"],
        strategy=strategy_params,
        seed=config["seed"],
    log:
        "logs/train_model/{strategy}.log",
    benchmark:
        "logs/benchmarks/train_model/{strategy}.tsv"
    wildcard_constraints:
        strategy="|".join(STRATEGIES),
    threads: config["training"]["threads"]
    resources:
        mem_mb=retry_scaled(4000),
        runtime=retry_scaled(60),
    conda:
        "../../envs/fairfer.yaml"
    script:
        "../../scripts/train_model.py"
