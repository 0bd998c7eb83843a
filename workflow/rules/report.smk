# The user-facing result: tidy and wide tables, deltas against `none` with significance, a chart.


rule tables:
    input:
        METRICS,
    output:
        csv=report("results/tables/long.csv", category="Tables"),
        parquet="results/tables/long.parquet",
        wide=report("results/tables/ndcg10.md", category="Tables"),
        deltas_csv="results/tables/deltas.csv",
        deltas=report("results/tables/deltas.md", category="Tables"),
        png=report("results/tables/ndcg10.png", category="Charts"),
    params:
        code=code_version("tables"),
    conda:
        "../envs/llara.yaml"
    log:
        "logs/tables.log",
    shell:
        "python -m llara.tables --metrics {input} --output-dir results/tables > {log} 2>&1 && cat {log}"
