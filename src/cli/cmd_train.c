/* medtrain train JOB.yaml [key=value ...] [--resume auto|DIR] [--force]: one training job on
 * every rank (mpirun / srun start the ranks; the job file says what to train). */
#include <cblas.h>
#include <cjson/cJSON.h>
#include <string.h>

#include "cli.h"
#include "medtrain/config.h"
#include "medtrain/log.h"
#include "medtrain/train.h"

void mt_cmd_train_usage(FILE *out) {
    fprintf(out,
            "usage: medtrain train JOB.yaml [key=value ...] [--resume auto|CKPT_DIR] [--force]\n\n"
            "Trains the job's model data-parallel over all ranks (run it under mpirun or srun\n"
            "for more than one). key=value overrides a job key (e.g. train.lr=0.05).\n\n"
            "  --resume auto   continue from RUN/ckpt/latest if there is one, else start\n"
            "  --resume DIR    continue from that checkpoint directory\n"
            "  --force         resume although the dataset, rank count or config differ\n\n"
            "Writes RUN/config.yaml, provenance.json, log.jsonl, ckpt/step_N/ and model/.\n"
            "Job keys (defaults shown):\n\n");
    mt_config_print_schema(mt_train_schema(), out);
}

mt_status mt_cmd_train(mt_comm *comm, int argc, char **argv) {
    if (mt_cli_wants_help(argc, argv, mt_cmd_train_usage)) return MT_OK;
    const char *job = NULL, *resume = NULL;
    bool force = false;
    char *overrides[256];
    int n_over = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--resume")) {
            if (++i >= argc)
                return mt_cli_usage_error(mt_cmd_train_usage, "train: --resume needs a value");
            resume = argv[i];
        } else if (!strncmp(a, "--resume=", 9)) {
            resume = a + 9;
        } else if (!strcmp(a, "--force")) {
            force = true;
        } else if (a[0] == '-') {
            return mt_cli_usage_error(mt_cmd_train_usage, "train: unknown option %s", a);
        } else if (strchr(a, '=')) {
            if (n_over == 256)
                return mt_cli_usage_error(mt_cmd_train_usage, "train: too many overrides");
            overrides[n_over++] = argv[i];
        } else if (!job) {
            job = a;
        } else {
            return mt_cli_usage_error(mt_cmd_train_usage,
                                      "train: one job file please (got %s and %s)", job, a);
        }
    }
    if (!job) return mt_cli_usage_error(mt_cmd_train_usage, "train: give a job file (JOB.yaml)");
    mt_config *cfg;
    MT_TRY(mt_comm_agree(comm, mt_config_load(job, mt_train_schema(), n_over, overrides, &cfg)));
    int threads = (int)mt_config_int(cfg, "train.threads");
    if (threads > 0) openblas_set_num_threads(threads);
    cJSON *build = mt_cli_build_json();
    mt_train_opts opts = {.config_path = job, .resume = resume, .force = force, .build = build};
    mt_status st = mt_train_run(cfg, &opts, comm);
    cJSON_Delete(build);
    mt_config_free(cfg);
    return st;
}
