/* The subcommands of `medtrain`. Each takes its own argv (argv[0] is the command name) and the
 * communicator (NULL for commands that do not start MPI), parses its options, and returns an
 * mt_status; main.c turns that into an exit code and makes sure no rank is left waiting. */
#ifndef MEDTRAIN_CLI_H
#define MEDTRAIN_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include "medtrain/comm.h"
#include "medtrain/status.h"

typedef struct mt_command {
    const char *name;
    const char *summary;
    bool needs_comm; /* starts MPI */
    mt_status (*run)(mt_comm *comm, int argc, char **argv);
    void (*usage)(FILE *out);
} mt_command;

mt_status mt_cmd_version(mt_comm *comm, int argc, char **argv);
void mt_cmd_version_usage(FILE *out);
mt_status mt_cmd_doctor(mt_comm *comm, int argc, char **argv);
void mt_cmd_doctor_usage(FILE *out);
mt_status mt_cmd_synth(mt_comm *comm, int argc, char **argv);
void mt_cmd_synth_usage(FILE *out);
mt_status mt_cmd_pack(mt_comm *comm, int argc, char **argv);
void mt_cmd_pack_usage(FILE *out);
mt_status mt_cmd_pack_text(mt_comm *comm, int argc, char **argv);
void mt_cmd_pack_text_usage(FILE *out);
mt_status mt_cmd_info(mt_comm *comm, int argc, char **argv);
void mt_cmd_info_usage(FILE *out);
mt_status mt_cmd_anonymize(mt_comm *comm, int argc, char **argv);
void mt_cmd_anonymize_usage(FILE *out);

mt_status mt_cmd_train(mt_comm *comm, int argc, char **argv);
void mt_cmd_train_usage(FILE *out);
mt_status mt_cmd_eval(mt_comm *comm, int argc, char **argv);
void mt_cmd_eval_usage(FILE *out);

/* Shared by commands: "--help" anywhere in argv prints usage and returns true. */
bool mt_cli_wants_help(int argc, char **argv, void (*usage)(FILE *out));
/* Fails with MT_ERR_USAGE, printing the command's usage after the message. */
mt_status mt_cli_usage_error(void (*usage)(FILE *out), const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Library versions, one "name: version" line each, for `version`, `doctor` and provenance. */
void mt_cli_print_versions(FILE *out);
/* The build and library versions as a JSON object (provenance). */
struct cJSON *mt_cli_build_json(void);

#endif
