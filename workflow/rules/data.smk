# Data: the generated world, BEIR downloads, pre-training pairs, the tiny base model.


rule synthetic:
    output:
        wiki=SYNTHETIC_WIKI,
        beir=directory(SYNTHETIC_BEIR),
    params:
        args=flags(config.get("synthetic", {}), dash=True),
        code=code_version("synthetic"),
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
    conda:
        "../envs/llara.yaml"
    log:
        "logs/pretrain_pairs.log",
    shell:
        "python -m llara.wiki --source {params.source:q} {params.args} --output {output} > {log} 2>&1"


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
        launch=launch("basemodel", "base_model"),
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
