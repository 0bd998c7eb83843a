# Per BEIR dataset: encode (sharded), search (faiss), score (pytrec_eval); BM25 and plain-encoder baselines.
# LLaRA systems: results/<stage>/llara/{style}/{variant}/seed{seed}/{dataset}/...; baselines:
# results/<stage>/baseline/{baseline}/{dataset}/... ({encoder}: a plain Hugging Face encoder). Each
# LLaRA rule has a baseline twin (`use rule ... with:`) that changes only paths and arguments.


rule encode_corpus:
    input:
        finetuned_model,
        beir_inputs,
    output:
        multiext(f"results/encode/{LLARA}/{{dataset}}/corpus.shard{{shard}}-of-{{num}}", ".npy", ".ids.json", ".meta.json"),
        job=job_record("encode_corpus", LLARA, "{dataset}", "shard{shard}-of-{num}"),
    params:
        model=finetuned_model,
        beir=lambda wc: beir_dir(wc.dataset),
        args=llara_encoder_args,
        out=lambda wc, output: Path(output[0]).parent,
        batch_size=EVAL["batch_size"],
        code=code_version("encode"),
    resources:
        launch=job_name("encode"),
    threads: threads_for("encode")
    conda:
        "../envs/llara.yaml"
    log:
        f"logs/encode/{LLARA}/{{dataset}}/corpus-{{shard}}-of-{{num}}.log",
    benchmark:
        benchmark("encode_corpus", LLARA, "{dataset}", "shard{shard}-of-{num}")
    shell:
        "OMP_NUM_THREADS={threads} {resources.launch} --record {output.job} -- python -m llara.encode {params.args} "
        "--model {params.model:q} --beir-dir {params.beir:q} --what corpus --shard {wildcards.shard} "
        "--num-shards {wildcards.num} --batch-size {params.batch_size} --no-progress --output {params.out} > {log} 2>&1"


use rule encode_corpus as encode_corpus_baseline with:
    input:
        beir_inputs,
    output:
        multiext(f"results/encode/{ENCODER}/{{dataset}}/corpus.shard{{shard}}-of-{{num}}", ".npy", ".ids.json", ".meta.json"),
        job=job_record("encode_corpus", ENCODER, "{dataset}", "shard{shard}-of-{num}"),
    params:
        model=hf_model,
        beir=lambda wc: beir_dir(wc.dataset),
        args=hf_encoder_args,
        out=lambda wc, output: Path(output[0]).parent,
        batch_size=EVAL["batch_size"],
        code=code_version("encode"),
    log:
        f"logs/encode/{ENCODER}/{{dataset}}/corpus-{{shard}}-of-{{num}}.log",
    benchmark:
        benchmark("encode_corpus", ENCODER, "{dataset}", "shard{shard}-of-{num}")


rule encode_queries:
    input:
        finetuned_model,
        beir_inputs,
    output:
        multiext(f"results/encode/{LLARA}/{{dataset}}/queries-{{split}}/queries.shard0000-of-0001", ".npy", ".ids.json", ".meta.json"),
        job=job_record("encode_queries", LLARA, "{dataset}", "{split}"),
    params:
        model=finetuned_model,
        beir=lambda wc: beir_dir(wc.dataset),
        args=llara_encoder_args,
        out=lambda wc, output: Path(output[0]).parent,
        batch_size=EVAL["batch_size"],
        code=code_version("encode"),
    resources:
        launch=job_name("encode"),
    threads: threads_for("encode")
    conda:
        "../envs/llara.yaml"
    log:
        f"logs/encode/{LLARA}/{{dataset}}/queries-{{split}}.log",
    benchmark:
        benchmark("encode_queries", LLARA, "{dataset}", "{split}")
    shell:
        "OMP_NUM_THREADS={threads} {resources.launch} --record {output.job} -- python -m llara.encode {params.args} "
        "--model {params.model:q} --beir-dir {params.beir:q} --what queries --split {wildcards.split} "
        "--batch-size {params.batch_size} --no-progress --output {params.out} > {log} 2>&1"


use rule encode_queries as encode_queries_baseline with:
    input:
        beir_inputs,
    output:
        multiext(f"results/encode/{ENCODER}/{{dataset}}/queries-{{split}}/queries.shard0000-of-0001", ".npy", ".ids.json", ".meta.json"),
        job=job_record("encode_queries", ENCODER, "{dataset}", "{split}"),
    params:
        model=hf_model,
        beir=lambda wc: beir_dir(wc.dataset),
        args=hf_encoder_args,
        out=lambda wc, output: Path(output[0]).parent,
        batch_size=EVAL["batch_size"],
        code=code_version("encode"),
    log:
        f"logs/encode/{ENCODER}/{{dataset}}/queries-{{split}}.log",
    benchmark:
        benchmark("encode_queries", ENCODER, "{dataset}", "{split}")


rule search:
    input:
        corpus=corpus_shards,
        queries=multiext(f"results/encode/{LLARA}/{{dataset}}/queries-{{split}}/queries.shard0000-of-0001", ".npy", ".ids.json", ".meta.json"),
    output:
        f"results/runs/{LLARA}/{{dataset}}/{{split}}.trec",
    params:
        queries=lambda wc, input: Path(input.queries[0]).parent,
        corpus=lambda wc, input: Path(input.corpus[0]).parent,
        tag=lambda wc: "-".join(Path(system_of(wc)).parts),
        k=EVAL["top_k"],
        index=EVAL["index"],
        code=code_version("search"),
    conda:
        "../envs/llara.yaml"
    log:
        f"logs/search/{LLARA}/{{dataset}}/{{split}}.log",
    benchmark:
        benchmark("search", LLARA, "{dataset}", "{split}")
    shell:
        "python -m llara.search --query-dir {params.queries} --corpus-dir {params.corpus} --tag {params.tag} "
        "--k {params.k} --index {params.index} --output {output} > {log} 2>&1"


use rule search as search_baseline with:
    input:
        corpus=corpus_shards,
        queries=multiext(f"results/encode/{ENCODER}/{{dataset}}/queries-{{split}}/queries.shard0000-of-0001", ".npy", ".ids.json", ".meta.json"),
    output:
        f"results/runs/{ENCODER}/{{dataset}}/{{split}}.trec",
    log:
        f"logs/search/{ENCODER}/{{dataset}}/{{split}}.log",
    benchmark:
        benchmark("search", ENCODER, "{dataset}", "{split}")


rule bm25:
    input:
        beir_inputs,
    output:
        "results/runs/baseline/bm25/{dataset}/{split}.trec",
    params:
        beir=lambda wc: beir_dir(wc.dataset),
        k=EVAL["top_k"],
        code=code_version("bm25"),
    conda:
        "../envs/llara.yaml"
    log:
        "logs/bm25/{dataset}/{split}.log",
    benchmark:
        benchmark("bm25", "baseline/bm25", "{dataset}", "{split}")
    shell:
        "python -m llara.bm25 --beir-dir {params.beir:q} --split {wildcards.split} --k {params.k} "
        "--output {output} > {log} 2>&1"


rule score:
    input:
        run=f"results/runs/{LLARA}/{{dataset}}/{{split}}.trec",
        beir=beir_inputs,
    output:
        f"results/metrics/{LLARA}/{{dataset}}/{{split}}.json",
    params:
        qrels=lambda wc: f"{beir_dir(wc.dataset)}/qrels/{wc.split}.tsv",
        model=finetuned_model,
        labels=llara_labels,  # variant, prompt style, seed, query/passage prompt kinds
        code=code_version("score"),
    conda:
        "../envs/llara.yaml"
    log:
        f"logs/score/{LLARA}/{{dataset}}/{{split}}.log",
    shell:
        "python -m llara.score --qrels {params.qrels:q} --run {input.run} --model {params.model:q} {params.labels} "
        "--dataset {wildcards.dataset} --split {wildcards.split} --output {output} > {log} 2>&1"


use rule score as score_baseline with:
    input:
        run=f"results/runs/{BASELINE}/{{dataset}}/{{split}}.trec",
        beir=beir_inputs,
    output:
        f"results/metrics/{BASELINE}/{{dataset}}/{{split}}.json",
    params:
        qrels=lambda wc: f"{beir_dir(wc.dataset)}/qrels/{wc.split}.tsv",
        model=lambda wc: "bm25" if wc.baseline == "bm25" else HF_BASELINES[wc.baseline]["model"],
        labels=lambda wc: f"--variant {wc.baseline}",  # no prompt style, seed or prompts
        code=code_version("score"),
    log:
        f"logs/score/{BASELINE}/{{dataset}}/{{split}}.log",
