rule match_race_labels:
    input:
        reference=race_matching_embeddings("fairface"),
        reference_manifest="results/manifests/fairface.parquet",
        target=race_matching_embeddings(EMOTION_DATASET),
        target_manifest=f"results/manifests/{EMOTION_DATASET}.parquet",
        # Labelled demographic datasets the classifiers are also evaluated on.
        external=[race_matching_embeddings(d) for d in EXTERNAL_REFERENCES],
        external_manifests=expand(
            "results/manifests/{dataset}.parquet", dataset=EXTERNAL_REFERENCES
        ),
        fit_subset=race_matching_fit_subset(),
        modules=package_modules("match_race_labels"),
    output:
        labels=f"results/group_labels/{EMOTION_DATASET}.parquet",
        report="results/group_labels/classifier_report.json",
        per_class="results/group_labels/classifier_per_class.csv",
        composition="results/group_labels/composition.csv",
        composition_plot="results/group_labels/composition.png",
    params:
        matching=config["race_matching"],
        seed=config["seed"],
        dataset=EMOTION_DATASET,
        external_references=EXTERNAL_REFERENCES,
    log:
        "logs/match_race_labels.log",
    benchmark:
        "logs/benchmarks/match_race_labels.tsv"
    threads: 2
    resources:
        mem_mb=retry_scaled(2000),
        runtime=retry_scaled(30),
    conda:
        "../../envs/fairfer.yaml"
    script:
        "../../scripts/match_race_labels.py"
