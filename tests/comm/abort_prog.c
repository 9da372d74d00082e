/* The program test_abort.sh runs. Modes (argv[1]):
 *   ranks    under mpiexec -n 2: rank 1 aborts while rank 0 waits in a barrier, then an all-reduce
 *   single   without mpirun: the only rank aborts (MPI singleton)
 *   no-mpi   without MPI at all: mt_comm_abort(NULL, ...) must still print and exit
 * If anything returns where it should not, the program says so and exits 0, which the script
 * counts as a failure. */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "medtrain/comm.h"

#define MESSAGE "disk quota exceeded writing ckpt/step_7 (abort test 9f3c)"

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "ranks";
    if (strcmp(mode, "no-mpi") == 0) mt_comm_abort(NULL, 5, MESSAGE);

    mt_comm *c = NULL;
    if (mt_comm_init(&argc, &argv, &c) != MT_OK) {
        fprintf(stderr, "mt_comm_init: %s\n", mt_error_message());
        return 0;
    }
    int rank = mt_comm_rank(c);
    if (strcmp(mode, "single") == 0 || rank == 1) {
        /* Let rank 0 settle into its barrier first, so the abort really interrupts a collective. */
        nanosleep(&(struct timespec){.tv_nsec = 300 * 1000 * 1000}, NULL);
        mt_comm_abort(c, 3, MESSAGE);
    }
    mt_status st = mt_comm_barrier(c);
    float x = 1;
    if (st == MT_OK) st = mt_comm_allreduce_f32(c, &x, 1, MT_COMM_SUM);
    printf("rank %d: collectives returned (%s) after rank 1 aborted: the job did not end\n", rank,
           mt_status_name(st));
    mt_comm_finalize(c);
    return 0;
}
