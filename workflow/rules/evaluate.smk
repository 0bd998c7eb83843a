# Per BEIR dataset: encode (sharded), search (faiss), score (pytrec_eval); BM25 and plain-encoder baselines.
# LLaRA systems: results/<stage>/llara/{style}/{variant}/seed{seed}/{stage}/{dataset}/..., where {stage} is
# `zeroshot` (the adapted checkpoint, no fine-tuning) or `finetuned/{negatives}`; released checkpoints:
# results/<stage>/checkpoint/{ckpt}/{stage}/...; baselines: results/<stage>/baseline/{baseline}/{dataset}/...
# ({encoder}: a plain Hugging Face encoder). Each LLaRA rule has twins (`use rule ... with:`) that change
# only paths and arguments.


rule encode_corpus:
    input:
        llara_encode_inputs,
    output:
        multiext(f"results/encode/{SYSTEM}/{{dataset}}/corpus.shard{{shard}}-of-{{num}}", npy=".npy", ids=".ids.json", meta=".meta.json"),
        job=job_record("encode_corpus", SYSTEM, "{dataset}", "shard{shard}-of-{num}"),
    params:
        args=llara_encoder_args,  # the model, the BEIR folder, the prompts and lengths (one function: a
        batch_size=EVAL["batch_size"],  # callable per job costs the paper config's dry run ~1 ms per job)
        code=code_version("encode"),
    resources:
        launch=job_name("encode"),
    threads: threads_for("encode")
    conda:
        "../envs/llara.yaml"
    log:
        f"logs/encode/{SYSTEM}/{{dataset}}/corpus-{{shard}}-of-{{num}}.log",
    benchmark:
        benchmark("encode_corpus", SYSTEM, "{dataset}", "shard{shard}-of-{num}")
    shell:
        "OMP_NUM_THREADS={threads} {resources.launch} --record {output.job} -- python -m llara.encode {params.args} "
        "--what corpus --shard {wildcards.shard} --num-shards {wildcards.num} --batch-size {params.batch_size} "
        "--no-progress --output $(dirname {output.npy:q}) > {log} 2>&1"


use rule encode_corpus as encode_corpus_baseline with:
    input:
        beir_inputs,
    output:
        multiext(f"results/encode/{ENCODER}/{{dataset}}/corpus.shard{{shard}}-of-{{num}}", npy=".npy", ids=".ids.json", meta=".meta.json"),
        job=job_record("encode_corpus", ENCODER, "{dataset}", "shard{shard}-of-{num}"),
    params:
        args=hf_encoder_args,
        batch_size=EVAL["batch_size"],
        code=code_version("encode"),
    log:
        f"logs/encode/{ENCODER}/{{dataset}}/corpus-{{shard}}-of-{{num}}.log",
    benchmark:
        benchmark("encode_corpus", ENCODER, "{dataset}", "shard{shard}-of-{num}")


use rule encode_corpus as encode_corpus_checkpoint with:
    input:
        beir_inputs,
    output:
        multiext(f"results/encode/{CHECKPOINT}/{{dataset}}/corpus.shard{{shard}}-of-{{num}}", npy=".npy", ids=".ids.json", meta=".meta.json"),
        job=job_record("encode_corpus", CHECKPOINT, "{dataset}", "shard{shard}-of-{num}"),
    params:
        args=checkpoint_encoder_args,
        batch_size=EVAL["batch_size"],
        code=code_version("encode"),
    log:
        f"logs/encode/{CHECKPOINT}/{{dataset}}/corpus-{{shard}}-of-{{num}}.log",
    benchmark:
        benchmark("encode_corpus", CHECKPOINT, "{dataset}", "shard{shard}-of-{num}")


rule encode_queries:
    input:
        llara_encode_inputs,
    output:
        multiext(f"results/encode/{SYSTEM}/{{dataset}}/queries-{{split}}/queries.shard0000-of-0001", npy=".npy", ids=".ids.json", meta=".meta.json"),
        job=job_record("encode_queries", SYSTEM, "{dataset}", "{split}"),
    params:
        args=llara_encoder_args,
        batch_size=EVAL["batch_size"],
        code=code_version("encode"),
    resources:
        launch=job_name("encode"),
    threads: threads_for("encode")
    conda:
        "../envs/llara.yaml"
    log:
        f"logs/encode/{SYSTEM}/{{dataset}}/queries-{{split}}.log",
    benchmark:
        benchmark("encode_queries", SYSTEM, "{dataset}", "{split}")
    shell:
        "OMP_NUM_THREADS={threads} {resources.launch} --record {output.job} -- python -m llara.encode {params.args} "
        "--what queries --split {wildcards.split} --batch-size {params.batch_size} --no-progress "
        "--output $(dirname {output.npy:q}) > {log} 2>&1"


use rule encode_queries as encode_queries_baseline with:
    input:
        beir_inputs,
    output:
        multiext(f"results/encode/{ENCODER}/{{dataset}}/queries-{{split}}/queries.shard0000-of-0001", npy=".npy", ids=".ids.json", meta=".meta.json"),
        job=job_record("encode_queries", ENCODER, "{dataset}", "{split}"),
    params:
        args=hf_encoder_args,
        batch_size=EVAL["batch_size"],
        code=code_version("encode"),
    log:
        f"logs/encode/{ENCODER}/{{dataset}}/queries-{{split}}.log",
    benchmark:
        benchmark("encode_queries", ENCODER, "{dataset}", "{split}")


use rule encode_queries as encode_queries_checkpoint with:
    input:
        beir_inputs,
    output:
        multiext(f"results/encode/{CHECKPOINT}/{{dataset}}/queries-{{split}}/queries.shard0000-of-0001", npy=".npy", ids=".ids.json", meta=".meta.json"),
        job=job_record("encode_queries", CHECKPOINT, "{dataset}", "{split}"),
    params:
        args=checkpoint_encoder_args,
        batch_size=EVAL["batch_size"],
        code=code_version("encode"),
    log:
        f"logs/encode/{CHECKPOINT}/{{dataset}}/queries-{{split}}.log",
    benchmark:
        benchmark("encode_queries", CHECKPOINT, "{dataset}", "{split}")


rule search:
    input:
        corpus=corpus_shards,
        queries=multiext(f"results/encode/{SYSTEM}/{{dataset}}/queries-{{split}}/queries.shard0000-of-0001", ".npy", ".ids.json", ".meta.json"),
    output:
        f"results/runs/{SYSTEM}/{{dataset}}/{{split}}.trec",
    params:
        dirs=search_dirs,  # --query-dir, --corpus-dir, --tag (one function: see encode_corpus)
        k=EVAL["top_k"],
        index=EVAL["index"],
        code=code_version("search"),
    conda:
        "../envs/llara.yaml"
    log:
        f"logs/search/{SYSTEM}/{{dataset}}/{{split}}.log",
    benchmark:
        benchmark("search", SYSTEM, "{dataset}", "{split}")
    shell:
        "python -m llara.search {params.dirs} "
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


use rule search as search_checkpoint with:
    input:
        corpus=corpus_shards,
        queries=multiext(f"results/encode/{CHECKPOINT}/{{dataset}}/queries-{{split}}/queries.shard0000-of-0001", ".npy", ".ids.json", ".meta.json"),
    output:
        f"results/runs/{CHECKPOINT}/{{dataset}}/{{split}}.trec",
    log:
        f"logs/search/{CHECKPOINT}/{{dataset}}/{{split}}.log",
    benchmark:
        benchmark("search", CHECKPOINT, "{dataset}", "{split}")


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
        run=f"results/runs/{SYSTEM}/{{dataset}}/{{split}}.trec",
        beir=beir_inputs,
    output:
        f"results/metrics/{SYSTEM}/{{dataset}}/{{split}}.json",
    params:
        args=llara_score_args,  # qrels, model, variant, prompt style, seed, query/passage prompt kinds
        code=code_version("score"),
    conda:
        "../envs/llara.yaml"
    log:
        f"logs/score/{SYSTEM}/{{dataset}}/{{split}}.log",
    shell:
        "python -m llara.score {params.args} --run {input.run} "
        "--output {output} > {log} 2>&1"


use rule score as score_baseline with:
    input:
        run=f"results/runs/{BASELINE}/{{dataset}}/{{split}}.trec",
        beir=beir_inputs,
    output:
        f"results/metrics/{BASELINE}/{{dataset}}/{{split}}.json",
    params:
        args=baseline_score_args,  # qrels, model, variant (no prompt style, seed or prompts)
        code=code_version("score"),
    log:
        f"logs/score/{BASELINE}/{{dataset}}/{{split}}.log",


use rule score as score_checkpoint with:
    input:
        run=f"results/runs/{CHECKPOINT}/{{dataset}}/{{split}}.trec",
        beir=beir_inputs,
    output:
        f"results/metrics/{CHECKPOINT}/{{dataset}}/{{split}}.json",
    params:
        args=checkpoint_score_args,  # qrels, model, its name as variant, its prompt kinds; no seed
        code=code_version("score"),
    log:
        f"logs/score/{CHECKPOINT}/{{dataset}}/{{split}}.log",
