rule fairness_tables:
    input:
        predictions=rules.train_model.output.predictions,
        classifier_report=rules.match_race_labels.output.report,
        group_labels=rules.match_race_labels.output.labels,
        modules=package_modules("fairness_tables"),
    output:
        group_metrics=multiext(
            "results/fairness/{strategy}/group_metrics", ".parquet", ".csv", ".md"
        ),
        class_disparities=multiext(
            "results/fairness/{strategy}/class_disparities", ".parquet", ".csv", ".md"
        ),
        summary=multiext("results/fairness/{strategy}/summary", ".parquet", ".csv", ".md"),
        intervals=multiext("results/fairness/{strategy}/intervals", ".parquet", ".csv", ".md"),
    params:
        attributes=config["fairness"]["attributes"],
        min_group_size=config["fairness"]["min_group_size"],
        uncertainty=config["fairness"]["uncertainty"],
        seed=config["seed"],
    log:
        "logs/fairness_tables/{strategy}.log",
    benchmark:
        "logs/benchmarks/fairness_tables/{strategy}.tsv"
    wildcard_constraints:
        strategy="|".join(STRATEGIES),
    threads: 1
    resources:
        mem_mb=retry_scaled(1000),
        runtime=retry_scaled(20),
    conda:
        "../../envs/fairfer.yaml"
    script:
        "../../scripts/fairness_tables.py"


rule compare_strategies:
    input:
        summaries=expand("results/fairness/{strategy}/summary.parquet", strategy=STRATEGIES),
        modules=package_modules("compare_strategies"),
    output:
        table=multiext("results/fairness/comparison", ".parquet", ".csv", ".md"),
        metrics="results/metrics.json",
    log:
        "logs/compare_strategies.log",
    benchmark:
        "logs/benchmarks/compare_strategies.tsv"
    threads: 1
    resources:
        mem_mb=retry_scaled(1000),
        runtime=retry_scaled(10),
    conda:
        "../../envs/fairfer.yaml"
    script:
        "../../scripts/compare_strategies.py"
