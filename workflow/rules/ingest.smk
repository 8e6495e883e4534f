# The archive and its extracted images are temp(): ingest_fairface copies the images into the
# manifest, and a checkout whose manifest came from `dvc pull` must not plan a re-download.
rule download_fairface:
    input:
        modules=package_modules("download_fairface"),
    output:
        archive=temp("resources/downloads/fairface.zip"),
        images=temp(directory("resources/fairface/images")),
    params:
        url=config["datasets"]["fairface"]["archive"]["url"],
        sha256=config["datasets"]["fairface"]["archive"]["sha256"],
    log:
        "logs/download_fairface.log",
    benchmark:
        "logs/benchmarks/download_fairface.tsv"
    localrule: True
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    conda:
        "../../envs/fairfer.yaml"
    script:
        "../../scripts/download_fairface.py"


# temp() as for FairFace: the manifest keeps what ingest needs, and a checkout whose manifests
# came from `dvc pull` must not plan a download.
rule download_dataset:
    input:
        modules=package_modules("download_dataset"),
    output:
        archive=temp("resources/downloads/{dataset}.archive"),
        root=temp(directory("resources/datasets/{dataset}")),
    params:
        source=lambda wildcards: config["datasets"][wildcards.dataset]["source"],
        sha256=lambda wildcards: config["datasets"][wildcards.dataset]["sha256"],
        archive_root=lambda wildcards: config["datasets"][wildcards.dataset]["archive_root"],
        layout=lambda wildcards: expected_layout(config, wildcards.dataset),
    log:
        "logs/download_dataset/{dataset}.log",
    benchmark:
        "logs/benchmarks/download_dataset/{dataset}.tsv"
    wildcard_constraints:
        # Only datasets configured with an archive source; "(?!)" matches nothing.
        dataset="|".join(ARCHIVE_DATASETS) or "(?!)",
    localrule: True
    threads: 1
    resources:
        mem_mb=1000,
        runtime=60,
    conda:
        "../../envs/fairfer.yaml"
    script:
        "../../scripts/download_dataset.py"


rule ingest_fairface:
    input:
        images=rules.download_fairface.output.images,
        labels=config["datasets"]["fairface"]["labels"].values(),
        modules=package_modules("ingest_fairface"),
    output:
        manifest="results/manifests/fairface.parquet",
        report="results/manifests/fairface_report.json",
        rejects="results/manifests/fairface_rejects.parquet",
    params:
        labels=config["datasets"]["fairface"]["labels"],
        sample=config["datasets"]["fairface"]["sample"],
        seed=config["seed"],
    log:
        "logs/ingest_fairface.log",
    benchmark:
        "logs/benchmarks/ingest_fairface.tsv"
    threads: 1
    resources:
        mem_mb=retry_scaled(4000),
        runtime=retry_scaled(15),
    conda:
        "../../envs/fairfer.yaml"
    script:
        "../../scripts/ingest_fairface.py"


rule ingest_ferplus:
    input:
        root=dataset_folder("ferplus"),
        votes=config["datasets"]["ferplus"]["votes_csv"] or [],
        modules=package_modules("ingest_ferplus"),
    output:
        manifest="results/manifests/ferplus.parquet",
        report="results/manifests/ferplus_report.json",
        rejects="results/manifests/ferplus_rejects.parquet",
    params:
        root=dataset_root("ferplus"),
        layout=config["datasets"]["ferplus"]["layout"],
        votes_csv=config["datasets"]["ferplus"]["votes_csv"],
        sample=config["datasets"]["ferplus"]["sample"],
        vote_source=config["datasets"]["ferplus"]["vote_source"],
        seed=config["seed"],
        checks=ingest_checks(),
    log:
        "logs/ingest_ferplus.log",
    benchmark:
        "logs/benchmarks/ingest_ferplus.tsv"
    threads: 1
    resources:
        mem_mb=retry_scaled(1000),
        runtime=retry_scaled(15),
    conda:
        "../../envs/fairfer.yaml"
    script:
        "../../scripts/ingest_ferplus.py"


rule ingest_rafdb:
    input:
        root=dataset_folder("rafdb"),
        modules=package_modules("ingest_rafdb"),
    output:
        manifest="results/manifests/rafdb.parquet",
        report="results/manifests/rafdb_report.json",
        rejects="results/manifests/rafdb_rejects.parquet",
    params:
        root=dataset_root("rafdb"),
        rafdb=config["datasets"]["rafdb"],
        seed=config["seed"],
        checks=ingest_checks(),
    log:
        "logs/ingest_rafdb.log",
    benchmark:
        "logs/benchmarks/ingest_rafdb.tsv"
    threads: 1
    resources:
        mem_mb=retry_scaled(2000),
        runtime=retry_scaled(15),
    conda:
        "../../envs/fairfer.yaml"
    script:
        "../../scripts/ingest_rafdb.py"


rule ingest_generic:
    input:
        root=dataset_folder("generic"),
        modules=package_modules("ingest_generic"),
    output:
        manifest="results/manifests/generic.parquet",
        report="results/manifests/generic_report.json",
        rejects="results/manifests/generic_rejects.parquet",
    params:
        root=dataset_root("generic"),
        generic=config["datasets"]["generic"],
        seed=config["seed"],
        attributes={
            "extra": EXTRA_ATTRIBUTES,
            "binning": config["fairness"]["binning"],
            "value_aliases": config["fairness"]["value_aliases"],
        },
        checks=ingest_checks(),
    log:
        "logs/ingest_generic.log",
    benchmark:
        "logs/benchmarks/ingest_generic.tsv"
    threads: 1
    resources:
        mem_mb=retry_scaled(2000),
        runtime=retry_scaled(15),
    conda:
        "../../envs/fairfer.yaml"
    script:
        "../../scripts/ingest_generic.py"


rule ingest_utkface:
    input:
        root=dataset_folder("utkface"),
        modules=package_modules("ingest_utkface"),
    output:
        manifest="results/manifests/utkface.parquet",
        report="results/manifests/utkface_report.json",
        rejects="results/manifests/utkface_rejects.parquet",
    params:
        root=dataset_root("utkface"),
        image_glob=config["datasets"]["utkface"]["image_glob"],
        sample=config["datasets"]["utkface"]["sample"],
        seed=config["seed"],
    log:
        "logs/ingest_utkface.log",
    benchmark:
        "logs/benchmarks/ingest_utkface.tsv"
    threads: 1
    resources:
        mem_mb=retry_scaled(2000),
        runtime=retry_scaled(15),
    conda:
        "../../envs/fairfer.yaml"
    script:
        "../../scripts/ingest_utkface.py"
