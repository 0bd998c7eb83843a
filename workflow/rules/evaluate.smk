# Per BEIR dataset: encode (sharded), search (faiss), score (pytrec_eval), and the BM25 baseline. One rule
# per step over the system's path segment {system} (llara.grid.System.to_path): a LLaRA model at a stage
# (llara/<style>/<variant>/seed<N>/zeroshot or .../finetuned/<negatives>), a released checkpoint
# (checkpoint/<name>/<stage>) or a baseline (baseline/<name>); the input functions of common.smk read it.
ENCODED_SYSTEM = {"system": ENCODED_RE}  # every system but BM25 encodes


rule encode_corpus:
    input:
        encode_inputs,
    output:
        npy=kept("results/encode/{system}/{dataset}/corpus.shard{shard}-of-{num}.npy"),  # evaluate.keep_encodings
        ids="results/encode/{system}/{dataset}/corpus.shard{shard}-of-{num}.ids.json",
        meta="results/encode/{system}/{dataset}/corpus.shard{shard}-of-{num}.meta.json",
        job=job_record("encode_corpus", "{system}", "{dataset}", "shard{shard}-of-{num}"),
    wildcard_constraints:
        **ENCODED_SYSTEM,
    params:
        args=encoder_args,  # the model, the BEIR folder, how it encodes (one function: a callable per
        batch_size=EVAL["batch_size"],  # job costs the paper config's dry run ~1 ms per job)
        store=EVAL["embedding_dtype"],
        code=code_version("encode"),
    resources:
        launch=job_name("encode"),
        cluster_jobs=1,
    threads: threads_for("encode")
    conda:
        "../envs/llara.yaml"
    log:
        "logs/encode/{system}/{dataset}/corpus-{shard}-of-{num}.log",
    benchmark:
        benchmark("encode_corpus", "{system}", "{dataset}", "shard{shard}-of-{num}")
    shell:
        "OMP_NUM_THREADS={threads} {resources.launch} --record {output.job} -- python -m llara.encode {params.args} "
        "--what corpus --shard {wildcards.shard} --num-shards {wildcards.num} --batch-size {params.batch_size} "
        "--store-dtype {params.store} --no-progress --output $(dirname {output.npy:q}) > {log} 2>&1"


rule encode_queries:
    input:
        encode_inputs,
    output:
        multiext("results/encode/{system}/{dataset}/queries-{split}/queries.shard0000-of-0001", npy=".npy", ids=".ids.json", meta=".meta.json"),
        job=job_record("encode_queries", "{system}", "{dataset}", "{split}"),
    wildcard_constraints:
        **ENCODED_SYSTEM,
    params:
        args=encoder_args,
        batch_size=EVAL["batch_size"],
        store=EVAL["embedding_dtype"],
        code=code_version("encode"),
    resources:
        launch=job_name("encode"),
        cluster_jobs=1,
    threads: threads_for("encode")
    conda:
        "../envs/llara.yaml"
    log:
        "logs/encode/{system}/{dataset}/queries-{split}.log",
    benchmark:
        benchmark("encode_queries", "{system}", "{dataset}", "{split}")
    shell:
        "OMP_NUM_THREADS={threads} {resources.launch} --record {output.job} -- python -m llara.encode {params.args} "
        "--what queries --split {wildcards.split} --batch-size {params.batch_size} --store-dtype {params.store} --no-progress "
        "--output $(dirname {output.npy:q}) > {log} 2>&1"


rule search:
    input:
        corpus=corpus_shards,
        queries=multiext("results/encode/{system}/{dataset}/queries-{split}/queries.shard0000-of-0001", ".npy", ".ids.json", ".meta.json"),
    output:
        "results/runs/{system}/{dataset}/{split}.trec",
    wildcard_constraints:
        **ENCODED_SYSTEM,
    params:
        dirs=search_dirs,  # --query-dir, --corpus-dir, --tag
        k=EVAL["top_k"],
        index=EVAL["index"],
        code=code_version("search"),
    resources:
        launch=job_name("search"),
        cluster_jobs=1,
    threads: threads_for("search")
    conda:
        "../envs/llara.yaml"
    log:
        "logs/search/{system}/{dataset}/{split}.log",
    benchmark:
        benchmark("search", "{system}", "{dataset}", "{split}")
    shell:
        "OMP_NUM_THREADS={threads} {resources.launch} -- python -m llara.search {params.dirs} "
        "--k {params.k} --index {params.index} --output {output} > {log} 2>&1"


rule bm25:
    input:
        beir_inputs,
    output:
        "results/runs/baseline/bm25/{dataset}/{split}.trec",
    params:
        beir=lambda wc: beir_dir(wc.dataset),
        k=EVAL["top_k"],
        code=code_version("bm25"),
    resources:
        launch=job_name("bm25"),
        cluster_jobs=1,
    threads: threads_for("bm25")
    conda:
        "../envs/llara.yaml"
    log:
        "logs/bm25/{dataset}/{split}.log",
    benchmark:
        benchmark("bm25", "baseline/bm25", "{dataset}", "{split}")
    shell:
        "OMP_NUM_THREADS={threads} {resources.launch} -- python -m llara.bm25 --beir-dir {params.beir:q} --split {wildcards.split} --k {params.k} "
        "--output {output} > {log} 2>&1"


rule score:
    input:
        unpack(score_inputs),  # run, beir (and the query encoding, whose .meta.json names the prompts)
    output:
        "results/metrics/{system}/{dataset}/{split}.json",
    params:
        args=score_args,  # qrels, dataset, split, model, encoding folder
        code=code_version("score"),
    resources:
        local_cores=1,
    conda:
        "../envs/llara.yaml"
    log:
        "logs/score/{system}/{dataset}/{split}.log",
    shell:
        "python -m llara.score {params.args} --run {input.run} --output {output} > {log} 2>&1"
