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


rule ingest_fairface:
    input:
        images=rules.download_fairface.output.images,
        labels=config["datasets"]["fairface"]["labels"].values(),
        modules=package_modules("ingest_fairface"),
    output:
        manifest="results/manifests/fairface.parquet",
        report="results/manifests/fairface_report.json",
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
        root=config["datasets"]["ferplus"]["path"],
        modules=package_modules("ingest_ferplus"),
    output:
        manifest="results/manifests/ferplus.parquet",
        report="results/manifests/ferplus_report.json",
    params:
        sample=config["datasets"]["ferplus"]["sample"],
        vote_source=config["datasets"]["ferplus"]["vote_source"],
        seed=config["seed"],
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
        root=config["datasets"]["rafdb"]["path"],
        modules=package_modules("ingest_rafdb"),
    output:
        manifest="results/manifests/rafdb.parquet",
        report="results/manifests/rafdb_report.json",
    params:
        rafdb=config["datasets"]["rafdb"],
        seed=config["seed"],
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
