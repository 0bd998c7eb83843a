# Data: the generated world, BEIR downloads, pre-training pairs, the tiny base model.


rule synthetic:
    output:
        wiki=SYNTHETIC_WIKI,
        beir=directory(SYNTHETIC_BEIR),
    params:
        args=flags(config.get("synthetic", {}), dash=True),
        code=code_version("synthetic"),
    resources:
        local_cores=1,
    conda:
        "../envs/llara.yaml"
    log:
        "logs/synthetic.log",
    shell:
        "python -m llara.synthetic {params.args} --articles-out {output.wiki} --beir-out {output.beir} > {log} 2>&1"


# the fine-tuning set of finetune.data.source synthetic: queries about the pre-training articles (the
# same seeded world as rule synthetic; only this folder is written)
rule synthetic_pretrain:
    output:
        directory(SYNTHETIC_PRETRAIN_BEIR),
    params:
        args=flags(config.get("synthetic", {}), dash=True),
        code=code_version("synthetic"),
    resources:
        local_cores=1,
    conda:
        "../envs/llara.yaml"
    log:
        "logs/synthetic_pretrain.log",
    shell:
        "python -m llara.synthetic {params.args} --pretrain-beir-out {output} > {log} 2>&1"


rule download_beir:
    output:
        directory("resources/beir/{dataset}"),
    params:
        code=code_version("beir"),
    resources:
        local_cores=1,
    conda:
        "../envs/llara.yaml"
    log:
        "logs/download_beir/{dataset}.log",
    shell:
        "python -m llara.beir download --name {wildcards.dataset} --cache-dir resources/beir > {log} 2>&1"


rule pretrain_pairs:
    input:
        pretrain_inputs,
    output:
        "results/pairs/pairs.jsonl",
    params:
        source=pretrain_source(),
        args=flags(config.get("pretrain", {}), dash=True, skip=("source",)),
        code=code_version("wiki"),
    resources:
        launch=job_name("pairs", "pretrain_pairs"),
        cluster_jobs=1,
    threads: threads_for("pairs")
    conda:
        "../envs/llara.yaml"
    log:
        "logs/pretrain_pairs.log",
    shell:
        "OMP_NUM_THREADS={threads} {resources.launch} -- python -m llara.wiki --source {params.source:q} {params.args} --output {output} > {log} 2>&1"


rule base_model:
    input:
        corpus=pretrain_inputs,
    output:
        model=directory("results/base/model"),
        job=job_record("base_model", "base"),
    params:
        corpus=pretrain_source(),
        args=flags(config.get("base_model", {}).get("tiny", {}), dash=True),
        code=code_version("basemodel"),
    resources:
        launch=job_name("basemodel", "base_model"),
        cluster_jobs=1,
    threads: threads_for("basemodel")
    conda:
        "../envs/llara.yaml"
    log:
        "logs/base_model.log",
    benchmark:
        benchmark("base_model", "base")
    shell:
        "{resources.launch} --record {output.job} -- python -m llara.basemodel --corpus {params.corpus:q} "
        "{params.args} --threads {threads} --output {output.model} > {log} 2>&1"


# A hub model (base_model.source, a checkpoint's or a baseline's model) at its pinned revision, fetched
# once on the login node (it needs the network; gated models the user's token); every job reads the
# folder offline. No code version here: a change to llara.fetch must not delete and fetch 13 GB again.
FETCHED = fetched_models()


rule fetch_model:
    output:
        directory("resources/models/{hub}/{revision}"),
    wildcard_constraints:
        hub=alternatives({Path(f).parent.name for f in FETCHED}),
    params:
        repo=lambda wc: FETCHED[f"resources/models/{wc.hub}/{wc.revision}"][0],
    resources:
        local_cores=1,
    conda:
        "../envs/llara.yaml"
    log:
        "logs/fetch_model/{hub}/{revision}.log",
    shell:
        "HF_HUB_OFFLINE=0 python -m llara.fetch --repo-id {params.repo:q} --revision {wildcards.revision:q} "
        "--output {output} > {log} 2>&1"
