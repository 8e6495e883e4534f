rule fairness_tables:
    input:
        predictions=rules.train_model.output.predictions,
        classifier_report=rules.group_labels.output.report,
        group_labels=rules.group_labels.output.labels,
        modules=package_modules("fairness_tables"),
    output:
        group_metrics=multiext(
            "results/fairness/{model}/{strategy}/seed-{seed}/group_metrics",
            ".parquet",
            ".csv",
            ".md",
        ),
        group_class_metrics=multiext(
            "results/fairness/{model}/{strategy}/seed-{seed}/group_class_metrics",
            ".parquet",
            ".csv",
            ".md",
        ),
        class_disparities=multiext(
            "results/fairness/{model}/{strategy}/seed-{seed}/class_disparities",
            ".parquet",
            ".csv",
            ".md",
        ),
        summary=multiext(
            "results/fairness/{model}/{strategy}/seed-{seed}/summary", ".parquet", ".csv", ".md"
        ),
    params:
        attributes=config["fairness"]["attributes"],
        min_group_size=config["fairness"]["min_group_size"],
        uncertainty=config["fairness"]["uncertainty"],
        seed=config["seed"],
        correction=config["race_matching"]["correction"],
    log:
        "logs/fairness_tables/{model}/{strategy}/seed-{seed}.log",
    benchmark:
        "logs/benchmarks/fairness_tables/{model}/{strategy}/seed-{seed}.tsv"
    wildcard_constraints:
        model="|".join(MODELS),
        strategy="|".join(STRATEGIES),
        seed=r"\d+",
    threads: 1
    resources:
        mem_mb=retry_scaled(2000),
        runtime=retry_scaled(30),
    conda:
        "../../envs/fairfer.yaml"
    script:
        "../../scripts/fairness_tables.py"


rule compare_strategies:
    input:
        predictions=run_files(PREDICTIONS),
        group_labels=rules.group_labels.output.labels,
        classifier_report=rules.group_labels.output.report,
        modules=package_modules("compare_strategies"),
    output:
        table=multiext("results/fairness/comparison", ".parquet", ".csv", ".md"),
        by_seed=multiext("results/fairness/comparison_by_seed", ".parquet", ".csv", ".md"),
        metrics="results/metrics.json",
    params:
        attributes=config["fairness"]["attributes"],
        uncertainty=config["fairness"]["uncertainty"],
        seed=config["seed"],
        baseline=BASELINE,
        correction=config["race_matching"]["correction"],
        min_group_size=config["fairness"]["min_group_size"],
        # Post-processing strategies, noted in the tables (groups used at prediction time).
        postprocess={s: config["strategies"][s] for s in POSTPROCESS_STRATEGIES},
    log:
        "logs/compare_strategies.log",
    benchmark:
        "logs/benchmarks/compare_strategies.tsv"
    threads: 1
    resources:
        mem_mb=retry_scaled(3000),
        runtime=retry_scaled(30),
    conda:
        "../../envs/fairfer.yaml"
    script:
        "../../scripts/compare_strategies.py"
