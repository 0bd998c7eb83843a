# LLaRA experiment grid: Wikipedia -> pre-training pairs -> adaptation {none, ebae, ebar, joint}
# -> fine-tuning (negatives: bm25 / dense / none) -> per BEIR dataset encode / search / score, zero-shot
# (the adapted checkpoint) and fine-tuned -> results/tables/.
# This file only wires; the rules live in workflow/rules/, the logic in the llara package.

# The default grid unless --configfile names another one (a config file replaces it whole: Snakemake
# would otherwise merge the two and leak the default's datasets into, say, the paper's grid).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/adapt.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        TABLES,
        ST_FOLDERS,
    default_target: True


# the last lines of a run: the main table and where the files are, or which rule failed and its log
onsuccess:
    on_success(log)


onerror:
    on_error(log)
