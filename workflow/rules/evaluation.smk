# Cross-dataset evaluation (evaluation.datasets): every trained model also predicts the test
# split of other emotion datasets, which get the same fairness tables and strategy comparison,
# each with its own group labels (ground truth where the dataset has them).


rule evaluate_model:
    input:
        checkpoint=rules.train_model.output.checkpoint,
        manifest="results/manifests/{dataset}.parquet",
        group_labels="results/group_labels/{dataset}.parquet",
        model_inputs=lambda wildcards: face_inputs(wildcards.model, wildcards.dataset),
        modules=package_modules("evaluate_model"),
    output:
        predictions=EVALUATION_PREDICTIONS,
    params:
        runtime={
            key: config["training"][key] for key in ("device", "mixed_precision")
        },
        restrict_to_shared_classes=config["evaluation"]["restrict_to_shared_classes"],
    log:
        "logs/evaluate_model/{dataset}/{model}/{strategy}/seed-{seed}.log",
    benchmark:
        "logs/benchmarks/evaluate_model/{dataset}/{model}/{strategy}/seed-{seed}.tsv"
    wildcard_constraints:
        dataset="|".join(EVALUATION_DATASETS) or "(?!)",
        model="|".join(TRAINED_MODELS),
        strategy="|".join(TRAINED_STRATEGIES),
        seed=r"\d+",
    threads: config["training"]["threads"]
    resources:
        mem_mb=retry_scaled(training_memory_mb),
        runtime=retry_scaled(60),
    conda:
        "../../envs/fairfer.yaml"
    script:
        "../../scripts/evaluate_model.py"


# The emotion dataset's tables and comparison, on an evaluation dataset's predictions.
use rule fairness_tables as evaluation_tables with:
    input:
        predictions=EVALUATION_PREDICTIONS,
        classifier_report=rules.group_labels.output.report,
        group_labels="results/group_labels/{dataset}.parquet",
        modules=package_modules("fairness_tables"),
    output:
        group_metrics=multiext(
            f"{EVALUATION_TABLES}/group_metrics", ".parquet", ".csv", ".md"
        ),
        group_class_metrics=multiext(
            f"{EVALUATION_TABLES}/group_class_metrics", ".parquet", ".csv", ".md"
        ),
        class_disparities=multiext(
            f"{EVALUATION_TABLES}/class_disparities", ".parquet", ".csv", ".md"
        ),
        summary=multiext(f"{EVALUATION_TABLES}/summary", ".parquet", ".csv", ".md"),
    params:
        attributes=EVALUATION_ATTRIBUTES,
        min_group_size=config["fairness"]["min_group_size"],
        uncertainty=config["fairness"]["uncertainty"],
        seed=config["seed"],
        correction=config["race_matching"]["correction"],
    log:
        "logs/evaluation_tables/{dataset}/{model}/{strategy}/seed-{seed}.log",
    benchmark:
        "logs/benchmarks/evaluation_tables/{dataset}/{model}/{strategy}/seed-{seed}.tsv"
    wildcard_constraints:
        dataset="|".join(EVALUATION_DATASETS) or "(?!)",
        model="|".join(MODELS),
        strategy="|".join(TRAINED_STRATEGIES),
        seed=r"\d+",


use rule compare_strategies as evaluation_comparison with:
    input:
        predictions=lambda wildcards: evaluation_run_files(wildcards.dataset),
        group_labels="results/group_labels/{dataset}.parquet",
        classifier_report=rules.group_labels.output.report,
        modules=package_modules("compare_strategies"),
    output:
        table=multiext("results/evaluation/{dataset}/comparison", ".parquet", ".csv", ".md"),
        by_seed=multiext(
            "results/evaluation/{dataset}/comparison_by_seed", ".parquet", ".csv", ".md"
        ),
        metrics="results/evaluation/{dataset}/metrics.json",
    params:
        attributes=EVALUATION_ATTRIBUTES,
        uncertainty=config["fairness"]["uncertainty"],
        seed=config["seed"],
        baseline=BASELINE,
        correction=config["race_matching"]["correction"],
        min_group_size=config["fairness"]["min_group_size"],
        # Post-processing strategies, noted in the tables (groups used at prediction time).
        postprocess={s: config["strategies"][s] for s in POSTPROCESS_STRATEGIES},
    log:
        "logs/evaluation_comparison/{dataset}.log",
    benchmark:
        "logs/benchmarks/evaluation_comparison/{dataset}.tsv"
    wildcard_constraints:
        dataset="|".join(EVALUATION_DATASETS) or "(?!)",
