/* medtrain <command> [options]: global options, dispatch, and the end of a run.
 *
 * Exit codes: 0 success, 1 failure, 2 usage error. When a command fails on one rank of several
 * and the failure was not agreed across ranks, the job is aborted with the message (MPI_Abort)
 * so that no other rank waits forever in a collective. */
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "medtrain/log.h"

static const mt_command commands[] = {
    {"synth", "write a synthetic chest X-ray cohort as DICOM files, labels and masks", false,
     mt_cmd_synth, mt_cmd_synth_usage},
    {"pack", "turn DICOM folders or PNG/JPEG manifests into one PHI-free HDF5 pack (MPI-parallel)",
     true, mt_cmd_pack, mt_cmd_pack_usage},
    {"pack-text", "tokenize prompt/response or LLaVA chat JSONL into an HDF5 text pack (LM tuning)",
     false, mt_cmd_pack_text, mt_cmd_pack_text_usage},
    {"info", "describe a pack: counts, label prevalence per split, image format, provenance", false,
     mt_cmd_info, mt_cmd_info_usage},
    {"anonymize", "write de-identified copies of DICOM files (PS3.15 basic profile)", false,
     mt_cmd_anonymize, mt_cmd_anonymize_usage},
    {"train", "train a model from a job file, data-parallel over all ranks (checkpoints, resume)",
     true, mt_cmd_train, mt_cmd_train_usage},
    {"eval", "evaluate a trained model on a pack split: AUROC, F1, predictions, ROC curves", true,
     mt_cmd_eval, mt_cmd_eval_usage},
    {"doctor", "check that this allocation works: ranks, BLAS, all-reduce, parallel HDF5, GPUs",
     true, mt_cmd_doctor, mt_cmd_doctor_usage},
    {"version", "print the version, build settings and library versions", false, mt_cmd_version,
     mt_cmd_version_usage},
};
enum { N_COMMANDS = sizeof commands / sizeof commands[0] };

static void usage(FILE *out) {
    fprintf(out,
            "usage: medtrain [global options] <command> [options]\n\n"
            "Distributed training for medical-imaging AI: DICOM to trained, evaluated models.\n\n"
            "commands:\n");
    for (int i = 0; i < N_COMMANDS; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\nglobal options (anywhere on the line):\n"
                 "  --log-level LEVEL   error, warn, info (default) or debug\n"
                 "  --log-all-ranks     let every rank log, not only rank 0\n"
                 "  -h, --help          this help; `medtrain <command> --help` for a command's\n\n"
                 "Run under `mpirun -np N` or `srun --mpi=pmix` for N ranks.\n");
}

bool mt_cli_wants_help(int argc, char **argv, void (*cmd_usage)(FILE *out)) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) break;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            if (mt_rank() == 0) cmd_usage(stdout);
            return true;
        }
    }
    return false;
}

mt_status mt_cli_usage_error(void (*cmd_usage)(FILE *out), const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (mt_rank() == 0 && cmd_usage) cmd_usage(stderr);
    return mt_fail(MT_ERR_USAGE, "%s", msg);
}

/* Removes the global options from argv wherever they are; returns the new argc or -1. */
static int take_global_options(int argc, char **argv) {
    int out = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--log-all-ranks") == 0) {
            mt_log_set_all_ranks(true);
        } else if (strcmp(argv[i], "--log-level") == 0 ||
                   strncmp(argv[i], "--log-level=", 12) == 0) {
            const char *v = argv[i][11] == '=' ? argv[i] + 12 : (i + 1 < argc ? argv[++i] : NULL);
            mt_log_level level;
            if (!v) {
                fprintf(stderr, "medtrain: --log-level needs a value\n");
                return -1;
            }
            if (mt_log_parse_level(v, &level) != MT_OK) {
                fprintf(stderr, "medtrain: %s\n", mt_error_message());
                return -1;
            }
            mt_log_set_level(level);
        } else {
            argv[out++] = argv[i];
        }
    }
    argv[out] = NULL;
    return out;
}

static const mt_command *find_command(const char *name) {
    for (int i = 0; i < N_COMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0) return &commands[i];
    return NULL;
}

static int exit_code(mt_status st) {
    return st == MT_OK ? 0 : st == MT_ERR_USAGE ? 2 : 1;
}

int main(int argc, char **argv) {
    argc = take_global_options(argc, argv);
    if (argc < 0) return 2;
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *name = argv[1];
    if (strcmp(name, "-h") == 0 || strcmp(name, "--help") == 0 || strcmp(name, "help") == 0) {
        const mt_command *c = argc > 2 ? find_command(argv[2]) : NULL;
        if (c)
            c->usage(stdout);
        else
            usage(stdout);
        return 0;
    }
    if (strcmp(name, "--version") == 0) name = "version";
    const mt_command *cmd = find_command(name);
    if (!cmd) {
        fprintf(stderr, "medtrain: unknown command '%s'\n\n", name);
        usage(stderr);
        return 2;
    }

    mt_comm *comm = NULL;
    if (cmd->needs_comm) {
        mt_status st = mt_comm_init(&argc, &argv, &comm);
        if (st != MT_OK) {
            fprintf(stderr, "medtrain %s: cannot start MPI: %s\n", cmd->name, mt_error_message());
            return 1;
        }
    }
    mt_status st = cmd->run(comm, argc - 1, argv + 1);
    if (st != MT_OK) {
        int world = comm ? mt_comm_world(comm) : 1;
        /* Usage errors happen on every rank alike, before any collective: nobody is waiting. */
        bool everyone_knows = world == 1 || st == MT_ERR_USAGE || mt_comm_failure_agreed(comm);
        if (!everyone_knows) {
            char msg[MT_ERROR_MAX + 64];
            snprintf(msg, sizeof msg, "medtrain %s: error: %s", cmd->name, mt_error_message());
            mt_comm_abort(comm, exit_code(st), msg);
        }
        if (mt_rank() == 0)
            fprintf(stderr, "medtrain %s: error: %s\n", cmd->name, mt_error_message());
    }
    if (comm) mt_comm_finalize(comm);
    return exit_code(st);
}
