# Per BEIR dataset: encode (sharded), search (faiss), score (pytrec_eval); BM25 and plain-encoder baselines.
# Systems are "{style}/{variant}/seed{seed}" for LLaRA models and "baseline/{name}/seed0" for baselines.


rule encode_corpus:
    input:
        encoder_inputs,
    output:
        multiext(
            "results/encode/{style}/{variant}/seed{seed}/{dataset}/corpus.shard{shard}-of-{num}",
            ".npy",
            ".ids.json",
            ".meta.json",
        ),
    params:
        model=encoder_model,
        beir=lambda wc: beir_dir(wc.dataset),
        args=encoder_args,
        out=lambda wc, output: Path(output[0]).parent,
        batch_size=EVAL["batch_size"],
        code=code_version("encode"),
    resources:
        launch=job_name("encode"),
    threads: threads_for("encode")
    conda:
        "../envs/llara.yaml"
    log:
        "logs/encode/{style}/{variant}/seed{seed}/{dataset}/corpus-{shard}-of-{num}.log",
    shell:
        "OMP_NUM_THREADS={threads} {resources.launch} python -m llara.encode {params.args} --model {params.model:q} "
        "--beir-dir {params.beir:q} --what corpus --shard {wildcards.shard} --num-shards {wildcards.num} "
        "--batch-size {params.batch_size} --no-progress --output {params.out} > {log} 2>&1"


rule encode_queries:
    input:
        encoder_inputs,
    output:
        multiext(
            "results/encode/{style}/{variant}/seed{seed}/{dataset}/queries-{split}/queries.shard0000-of-0001",
            ".npy",
            ".ids.json",
            ".meta.json",
        ),
    params:
        model=encoder_model,
        beir=lambda wc: beir_dir(wc.dataset),
        args=encoder_args,
        out=lambda wc, output: Path(output[0]).parent,
        batch_size=EVAL["batch_size"],
        code=code_version("encode"),
    resources:
        launch=job_name("encode"),
    threads: threads_for("encode")
    conda:
        "../envs/llara.yaml"
    log:
        "logs/encode/{style}/{variant}/seed{seed}/{dataset}/queries-{split}.log",
    shell:
        "OMP_NUM_THREADS={threads} {resources.launch} python -m llara.encode {params.args} --model {params.model:q} "
        "--beir-dir {params.beir:q} --what queries --split {wildcards.split} --batch-size {params.batch_size} "
        "--no-progress --output {params.out} > {log} 2>&1"


rule search:
    input:
        corpus=corpus_shards,
        queries=multiext(
            "results/encode/{style}/{variant}/seed{seed}/{dataset}/queries-{split}/queries.shard0000-of-0001",
            ".npy",
            ".ids.json",
            ".meta.json",
        ),
    output:
        "results/runs/{style}/{variant}/seed{seed}/{dataset}/{split}.trec",
    params:
        queries=lambda wc, input: Path(input.queries[0]).parent,
        corpus=lambda wc, input: Path(input.corpus[0]).parent,
        k=EVAL["top_k"],
        index=EVAL["index"],
        code=code_version("search"),
    conda:
        "../envs/llara.yaml"
    log:
        "logs/search/{style}/{variant}/seed{seed}/{dataset}/{split}.log",
    shell:
        "python -m llara.search --query-dir {params.queries} --corpus-dir {params.corpus} "
        "--tag {wildcards.style}-{wildcards.variant}-seed{wildcards.seed} --k {params.k} --index {params.index} "
        "--output {output} > {log} 2>&1"


rule bm25:
    input:
        beir_inputs,
    output:
        "results/runs/baseline/bm25/seed0/{dataset}/{split}.trec",
    params:
        beir=lambda wc: beir_dir(wc.dataset),
        k=EVAL["top_k"],
        code=code_version("bm25"),
    conda:
        "../envs/llara.yaml"
    log:
        "logs/bm25/{dataset}/{split}.log",
    shell:
        "python -m llara.bm25 --beir-dir {params.beir:q} --split {wildcards.split} --k {params.k} "
        "--output {output} > {log} 2>&1"


ruleorder: bm25 > search


rule score:
    input:
        run="results/runs/{style}/{variant}/seed{seed}/{dataset}/{split}.trec",
        beir=beir_inputs,
    output:
        "results/metrics/{style}/{variant}/seed{seed}/{dataset}/{split}.json",
    params:
        qrels=lambda wc: f"{beir_dir(wc.dataset)}/qrels/{wc.split}.tsv",
        model=lambda wc: "bm25" if wc.variant == "bm25" else encoder_model(wc),
        style=lambda wc: "-" if wc.style == "baseline" else wc.style,
        code=code_version("score"),
    conda:
        "../envs/llara.yaml"
    log:
        "logs/score/{style}/{variant}/seed{seed}/{dataset}/{split}.log",
    shell:
        "python -m llara.score --qrels {params.qrels:q} --run {input.run} --model {params.model:q} "
        "--variant {wildcards.variant} --prompt-style {params.style} --dataset {wildcards.dataset} "
        "--split {wildcards.split} --seed {wildcards.seed} --output {output} > {log} 2>&1"
