/* Progress reports: a redrawn bar on a terminal, periodic plain lines elsewhere; rank 0 only. */
#include "medtrain/progress.h"

#include <stdarg.h>
#include <string.h>
#include <unistd.h>

#include "medtrain/status.h"
#include "medtrain/timer.h"

static void format_duration(double s, char *buf, size_t n) {
    if (s < 0 || s > 1e7) {
        snprintf(buf, n, "?");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else if (t >= 60)
        snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
    else
        snprintf(buf, n, "%lds", t);
}

void mt_progress_begin_on(mt_progress *p, FILE *out, bool tty, double interval, const char *label,
                          int64_t total, const char *unit) {
    memset(p, 0, sizeof *p);
    snprintf(p->label, sizeof p->label, "%s", label);
    snprintf(p->unit, sizeof p->unit, "%s", unit ? unit : "it");
    p->total = total;
    p->out = out;
    p->tty = tty;
    p->interval = interval;
    p->enabled = mt_rank() == 0;
    p->start = p->last_draw = mt_now();
}

void mt_progress_begin(mt_progress *p, const char *label, int64_t total, const char *unit) {
    bool tty = isatty(STDERR_FILENO);
    mt_progress_begin_on(p, stderr, tty, tty ? 0.1 : 30.0, label, total, unit);
}

static void draw(mt_progress *p, bool final) {
    double now = mt_now(), elapsed = now - p->start;
    double rate = elapsed > 0 ? (double)p->done / elapsed : 0;
    char eta[32] = "", took[32];
    format_duration(elapsed, took, sizeof took);
    if (p->total > 0 && rate > 0 && !final) {
        char left[24];
        format_duration((double)(p->total - p->done) / rate, left, sizeof left);
        snprintf(eta, sizeof eta, ", %s left", left);
    }
    char count[64];
    if (p->total > 0)
        snprintf(count, sizeof count, "%lld/%lld", (long long)p->done, (long long)p->total);
    else
        snprintf(count, sizeof count, "%lld", (long long)p->done);
    const char *sep = p->note[0] ? "  " : "";
    if (p->tty) {
        char bar[32] = "";
        if (p->total > 0) {
            int width = 24, filled = (int)(width * (double)p->done / (double)p->total);
            if (filled > width) filled = width;
            bar[0] = '[';
            for (int i = 0; i < width; i++) bar[1 + i] = i < filled ? '#' : '.';
            bar[1 + width] = ']';
            bar[2 + width] = '\0';
        }
        fprintf(p->out, "\r\033[K%s %s %s %.1f %s/s%s%s%s%s", p->label, bar, count, rate, p->unit,
                final ? ", " : "", final ? took : eta, sep, p->note);
        if (final) fputc('\n', p->out);
    } else {
        fprintf(p->out, "%s: %s %s, %.1f %s/s, %s elapsed%s%s%s\n", p->label, count, p->unit, rate,
                p->unit, took, eta, sep, p->note);
    }
    fflush(p->out);
    p->last_draw = now;
}

void mt_progress_update(mt_progress *p, int64_t done) {
    p->done = done;
    if (!p->enabled) return;
    if (mt_now() - p->last_draw >= p->interval) draw(p, false);
}

void mt_progress_note(mt_progress *p, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->note, sizeof p->note, fmt, ap);
    va_end(ap);
}

void mt_progress_end(mt_progress *p) {
    if (p->enabled) draw(p, true);
    p->enabled = false;
}
