// DICOM through GDCM. This is the project's only C++ file: GDCM is a C++ library, and everything
// medtrain needs from it is wrapped here behind the C API of include/medtrain/dicom.h. No C++
// exception crosses that boundary: every entry point catches everything and turns it into
// mt_fail().
//
// What lives here, in this order:
//   structure  GDCM as Debian builds it keeps its assertions, and aborts the process on many
//              damaged files. So every file is first walked here (file meta information,
//              elements, sequence items, pixel data fragments, all inside the file) and its
//              codestream headers compared with the DICOM header; only then does GDCM see it.
//   reading    a header pass (gdcm::Reader up to Pixel Data, whose value is not read) fills the
//              fields and checks them; mt_dicom_read then decodes with gdcm::ImageReader and
//              keeps the first frame, samples interleaved, masked to bits stored.
//   writing    the data set is built element by element (dictionary VRs), the pixels are
//              encoded by gdcm::ImageChangeTransferSyntax, gdcm::Writer adds the File Meta
//              Information and writes to memory, and mt_file_write_atomic puts it in place.
//   anonymizing  the PS3.15 Basic Profile (Table E.1-1) plus generic rules (private tags, names,
//              dates, UIDs), applied recursively into sequences; written the same way.
//
// PRIVACY: messages name the file and the problem. No header value is ever put into a message;
// SOP class and transfer syntax UIDs are named through GDCM's UID table, and a UID GDCM does not
// know is printed only when it lies under the DICOM root 1.2.840.10008. GDCM's own warnings (which
// can quote values) are switched off. (libjpeg and CharLS still print their own complaints about
// damaged codestreams on stderr; those hold no header values.)
#include "medtrain/dicom.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <random>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include <gdcmByteValue.h>
#include <gdcmDataSet.h>
#include <gdcmDict.h>
#include <gdcmDicts.h>
#include <gdcmExplicitDataElement.h>
#include <gdcmFileMetaInformation.h>
#include <gdcmGlobal.h>
#include <gdcmImage.h>
#include <gdcmImageChangeTransferSyntax.h>
#include <gdcmImageReader.h>
#include <gdcmItem.h>
#include <gdcmReader.h>
#include <gdcmSequenceOfFragments.h>
#include <gdcmSequenceOfItems.h>
#include <gdcmSwapper.h>
#include <gdcmTrace.h>
#include <gdcmTransferSyntax.h>
#include <gdcmUIDs.h>
#include <gdcmVersion.h>
#include <gdcmWriter.h>

#include "medtrain/fs.h"
#include "medtrain/hash.h"
#include "medtrain/mem.h"

extern "C" const char *mt_dicom_gdcm_version(void) {
    return gdcm::Version::GetVersion();
}

namespace {

const gdcm::Tag kPixelData(0x7fe0, 0x0010);

// ---- small helpers ---------------------------------------------------------------------------

// GDCM's warnings and errors go to std::cerr and may quote header values: turn them off.
void gdcm_quiet() {
    static std::once_flag once;
    std::call_once(once, [] {
        gdcm::Trace::DebugOff();
        gdcm::Trace::WarningOff();
        gdcm::Trace::ErrorOff();
    });
}

void copy_str(char *dst, size_t cap, const std::string &s) {
    size_t n = std::min(s.size(), cap - 1);
    memcpy(dst, s.data(), n);
    dst[n] = '\0';
}

// Strips DICOM padding: leading spaces, trailing spaces and NULs.
std::string trim(std::string s) {
    size_t e = s.size();
    while (e > 0 && (s[e - 1] == ' ' || s[e - 1] == '\0')) e--;
    size_t b = 0;
    while (b < e && s[b] == ' ') b++;
    return s.substr(b, e - b);
}

// The text value of tag in ds (trimmed), or false when absent, empty or not a plain value.
bool get_text(const gdcm::DataSet &ds, const gdcm::Tag &tag, std::string *out) {
    if (!ds.FindDataElement(tag)) return false;
    const gdcm::ByteValue *bv = ds.GetDataElement(tag).GetByteValue();
    if (!bv || !bv->GetPointer()) return false;
    *out = trim(std::string(bv->GetPointer(), bv->GetLength()));
    return !out->empty();
}

// The first of a backslash-separated list of values.
std::string first_value(const std::string &s) {
    return trim(s.substr(0, s.find('\\')));
}

// One decimal number (DS or IS); false when absent or not a number.
bool parse_number(const std::string &text, double *out) {
    std::string s = trim(text);
    if (s.empty()) return false;
    char *end = nullptr;
    errno = 0;
    double v = strtod(s.c_str(), &end);
    if (end == s.c_str() || *end != '\0' || errno == ERANGE || !std::isfinite(v)) return false;
    *out = v;
    return true;
}

bool get_number(const gdcm::DataSet &ds, const gdcm::Tag &tag, double *out) {
    std::string s;
    return get_text(ds, tag, &s) && parse_number(first_value(s), out);
}

// An unsigned short (US) element. GDCM holds values in little-endian order whatever the
// transfer syntax (it swaps big-endian data sets as it reads them).
bool get_us(const gdcm::DataSet &ds, const gdcm::Tag &tag, int *out) {
    if (!ds.FindDataElement(tag)) return false;
    const gdcm::ByteValue *bv = ds.GetDataElement(tag).GetByteValue();
    if (!bv || bv->GetLength() < 2) return false;
    const unsigned char *p = reinterpret_cast<const unsigned char *>(bv->GetPointer());
    *out = p[0] | (p[1] << 8);
    return true;
}

// A UID that may be shown to a person: GDCM's name for it, or the UID itself when it is a
// standard one GDCM does not know. Anything else might not be a UID at all (a header value put
// in the wrong place), so it is not printed.
std::string uid_name(const std::string &uid) {
    if (uid.empty()) return "none given";
    gdcm::UIDs u;
    if (u.SetFromUID(uid.c_str()) && u.GetName() && *u.GetName()) return u.GetName();
    if (uid.rfind("1.2.840.10008.", 0) == 0 && uid.size() <= 64 &&
        uid.find_first_not_of("0123456789.") == std::string::npos)
        return uid;
    return "a non-standard UID";
}

// The VR the public dictionary gives tag t (VR::INVALID when it has none).
gdcm::VR dict_vr(const gdcm::Tag &t) {
    return gdcm::Global::GetInstance().GetDicts().GetDictEntry(t).GetVR();
}

std::string tag_str(const gdcm::Tag &t) {
    char s[16];
    snprintf(s, sizeof s, "(%04X,%04X)", t.GetGroup(), t.GetElement());
    return s;
}

// Runs fn, turning any C++ exception into an mt_status (and no header value into the message).
template <class F> mt_status guarded(const char *path, const char *what, F fn) {
    try {
        return fn();
    } catch (const std::bad_alloc &) {
        return mt_fail(MT_ERR_NOMEM, "%s: out of memory while %s", path, what);
    } catch (...) {
        return mt_fail(MT_ERR_FORMAT, "%s: GDCM failed while %s (corrupt file?)", path, what);
    }
}

// ---- files and their structure -------------------------------------------------------------
//
// Debian's GDCM is built with assertions on, and its parser aborts the process (or, for deflated
// data sets, loops forever) on many truncated or corrupt files. So no file reaches GDCM before the
// walk below has checked that the file meta information, every element, every sequence item and
// every pixel data fragment lies inside the file. The walk reads element headers only (the file is
// mapped, so skipped values are never paged in); it also gives Pixel Data's length and how much of
// it the file holds, since GDCM zero-fills truncated pixel data without saying so.

// A read-only mapping of a whole file.
struct mapped_file {
    const uint8_t *p = nullptr;
    size_t n = 0;
    mapped_file() = default;
    mapped_file(const mapped_file &) = delete;
    mapped_file &operator=(const mapped_file &) = delete;
    ~mapped_file() {
        if (p) munmap(const_cast<uint8_t *>(p), n);
    }
};

// Maps path: a readable, non-empty regular file.
mt_status map_file(const char *path, mapped_file *f) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return mt_fail(MT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    mt_status status = MT_OK;
    if (fstat(fd, &st) != 0)
        status = mt_fail(MT_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    else if (!S_ISREG(st.st_mode))
        status = mt_fail(MT_ERR_IO, "%s: not a regular file", path);
    else if (st.st_size == 0)
        status = mt_fail(MT_ERR_FORMAT, "%s: empty file (0 bytes): not a DICOM file", path);
    if (status == MT_OK) {
        void *m = mmap(nullptr, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED)
            status = mt_fail(MT_ERR_IO, "%s: cannot map: %s", path, strerror(errno));
        else
            f->p = static_cast<const uint8_t *>(m), f->n = (size_t)st.st_size;
    }
    close(fd);
    return status;
}

// How the data set's elements are encoded.
struct encoding {
    bool explicit_vr, big_endian;
};

// What the walk learns.
struct layout {
    std::string ts_uid;  // from the file meta information; empty when it has none
    bool part10 = false; // 128-byte preamble and "DICM"
    bool has_pixels = false, encapsulated = false;
    uint64_t pixel_vl = 0;        // value length of top-level Pixel Data when defined
    uint64_t pixel_available = 0; // bytes of the data set after its Pixel Data header
    // The data set's bytes (in the mapped file, or inflated), kept for checking codestreams, and
    // the (offset, length) of each fragment of encapsulated Pixel Data after the offset table.
    mapped_file file;
    std::string inflated;
    const uint8_t *ds = nullptr;
    size_t ds_n = 0;
    std::vector<std::pair<size_t, size_t>> fragments;
};

bool long_length_vr(const uint8_t *vr) {
    static const char *const vrs[] = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ",
                                      "SV", "UC", "UN", "UR", "UT", "UV"};
    for (const char *v : vrs)
        if (vr[0] == v[0] && vr[1] == v[1]) return true;
    return false;
}

// One of the VRs of PS3.5 Table 6.2-1 (GDCM's parser asserts on some others).
bool is_vr(const uint8_t *vr) {
    static const char kVrs[] =
        "AEASATCSDADSDTFDFLISLOLTOBODOFOLOVOWPNSHSLSQSSSTSVTMUCUIULUNURUSUTUV";
    for (size_t i = 0; i + 1 < sizeof kVrs; i += 2)
        if (vr[0] == kVrs[i] && vr[1] == kVrs[i + 1]) return true;
    return false;
}

// Walks the elements of a data set held in [p, p + n) and checks that everything lies inside.
class walker {
  public:
    walker(const uint8_t *p, size_t n, layout *lay) : p_(p), n_(n), lay_(lay) {}
    std::string why; // what is wrong, when a walk returns false (tags only, never values)

    // The top-level data set from pos to the end; stops after Pixel Data when stop_at_pixels.
    bool top(size_t pos, encoding enc, bool stop_at_pixels) {
        stop_at_pixels_ = stop_at_pixels;
        return dataset(pos, n_, enc, 0, true, nullptr);
    }

  private:
    const uint8_t *p_;
    size_t n_;
    layout *lay_;
    bool stop_at_pixels_ = false, stopped_ = false;
    int defined_ = 0; // how many enclosing sequences or items have a defined length

    uint16_t u16(size_t at, encoding e) const {
        return e.big_endian ? (uint16_t)(p_[at] << 8 | p_[at + 1])
                            : (uint16_t)(p_[at + 1] << 8 | p_[at]);
    }
    uint32_t u32(size_t at, encoding e) const {
        const uint8_t *b = p_ + at;
        return e.big_endian
                   ? ((uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3])
                   : ((uint32_t)b[3] << 24 | (uint32_t)b[2] << 16 | (uint32_t)b[1] << 8 | b[0]);
    }
    bool fail(const char *fmt, unsigned g = 0, unsigned e = 0) {
        char buf[160];
        snprintf(buf, sizeof buf, fmt, g, e);
        why = buf;
        return false;
    }

    // Elements from pos up to end. Inside an undefined-length item (item_end set) the walk ends
    // at the item delimiter and *item_end is the position after it.
    bool dataset(size_t pos, size_t end, encoding enc, int depth, bool top_level,
                 size_t *item_end) {
        if (depth > 32) return fail("sequences nested more than 32 deep");
        while (pos < end) {
            if (end - pos < 8) // GDCM asserts on these, even when they are zero padding
                return fail("%u bytes after the last element (truncated?)", (unsigned)(end - pos));
            uint16_t g = u16(pos, enc), e = u16(pos + 2, enc);
            if (g == 0xfffe && e == 0xe00d) { // item delimiter
                if (u32(pos + 4, enc) != 0)
                    return fail("an item delimiter has a length (corrupt file?)");
                pos += 8;
                if (item_end) {
                    *item_end = pos;
                    return true;
                }
                continue; // stray one inside a defined-length item: GDCM skips it too
            }
            if (g == 0xfffe) return fail("unexpected item tag (%04X,%04X)", g, e);
            if (!element(pos, end, enc, depth, top_level)) return false;
            if (stopped_) return true;
        }
        if (item_end) return fail("a sequence item has no end (truncated?)");
        return true;
    }

    bool element(size_t &pos, size_t end, encoding enc, int depth, bool top_level) {
        uint16_t g = u16(pos, enc), e = u16(pos + 2, enc);
        size_t hdr = 8;
        uint32_t vl;
        const uint8_t *vr = p_ + pos + 4;
        bool is_sq = false, is_un = false, long_vr = true;
        if (enc.explicit_vr) {
            if (!is_vr(vr)) return fail("element (%04X,%04X) has no valid VR", g, e);
            long_vr = long_length_vr(vr);
            is_sq = vr[0] == 'S' && vr[1] == 'Q';
            is_un = vr[0] == 'U' && vr[1] == 'N';
            if (long_vr) {
                if (end - pos < 12)
                    return fail("element (%04X,%04X) is cut short (truncated?)", g, e);
                vl = u32(pos + 8, enc), hdr = 12;
            } else {
                vl = u16(pos + 6, enc);
            }
        } else {
            vl = u32(pos + 4, enc);
        }
        size_t start = pos + hdr;
        bool pixels = g == 0x7fe0 && e == 0x0010;
        if (vl == 0xffffffffu) {
            // Only sequences, UN (CP-246) and encapsulated pixel data have undefined lengths.
            bool ob_ow = vr[0] == 'O' && (vr[1] == 'B' || vr[1] == 'W');
            if (enc.explicit_vr && !is_sq && !is_un && !(pixels && ob_ow))
                return fail("element (%04X,%04X) has an undefined length", g, e);
            if (pixels) { // encapsulated: fragments up to a sequence delimiter
                if (top_level) {
                    lay_->has_pixels = lay_->encapsulated = true;
                    lay_->pixel_available = end - start;
                }
                if (!fragments(start, end, enc, top_level, &pos)) return false;
                stopped_ = top_level && stop_at_pixels_;
                return true;
            }
            // A sequence; an undefined-length UN is one too, encoded implicit little endian.
            encoding inner = is_un ? encoding{false, false} : enc;
            return sequence(start, end, true, inner, depth, &pos);
        }
        // GDCM asserts on odd lengths inside defined-length sequences and items, whose lengths it
        // adds up (DICOM has only even lengths; outside those, GDCM copes, and so do we).
        if (defined_ > 0 && vl % 2)
            return fail("element (%04X,%04X) in a sequence has an odd length (corrupt file?)", g,
                        e);
        if (vl > end - start) {
            if (pixels && top_level) { // check_header() names the shortfall
                lay_->has_pixels = true;
                lay_->pixel_vl = vl;
                lay_->pixel_available = end - start;
                pos = end;
                stopped_ = true;
                return true;
            }
            return fail("element (%04X,%04X) runs past the end of the data (truncated?)", g, e);
        }
        bool looks_sq = !enc.explicit_vr && vl >= 8 && u16(start, enc) == 0xfffe &&
                        u16(start + 2, enc) == 0xe000;
        if ((is_sq || looks_sq) && !pixels) {
            size_t next;
            defined_++;
            if (!sequence(start, start + vl, false, enc, depth, &next)) return false;
            defined_--;
        }
        if (pixels && top_level) {
            lay_->has_pixels = true;
            lay_->pixel_vl = vl;
            lay_->pixel_available = end - start;
            stopped_ = stop_at_pixels_;
        }
        pos = start + vl;
        return true;
    }

    // Items of a sequence starting at pos; *next is the position after the sequence.
    bool sequence(size_t pos, size_t end, bool undefined, encoding enc, int depth, size_t *next) {
        for (;;) {
            if (!undefined && pos == end) break;
            if (end - pos < 8) return fail("a sequence is cut short (truncated?)");
            uint16_t g = u16(pos, enc), e = u16(pos + 2, enc);
            uint32_t len = u32(pos + 4, enc);
            pos += 8;
            if (g == 0xfffe && e == 0xe0dd) { // sequence delimiter
                if (len != 0) return fail("a sequence delimiter has a length (corrupt file?)");
                if (undefined) break;
                continue;
            }
            if (g != 0xfffe || e != 0xe000)
                return fail("expected a sequence item, found (%04X,%04X)", g, e);
            if (len == 0xffffffffu) {
                if (!dataset(pos, end, enc, depth + 1, false, &pos)) return false;
            } else {
                if (len > end - pos) return fail("a sequence item runs past the end (truncated?)");
                if (len % 2) return fail("a sequence item has an odd length (corrupt file?)");
                defined_++;
                if (!dataset(pos, pos + len, enc, depth + 1, false, nullptr)) return false;
                defined_--;
                pos += len;
            }
        }
        *next = pos;
        return true;
    }

    // Encapsulated pixel data: defined-length items up to a sequence delimiter.
    bool fragments(size_t pos, size_t end, encoding enc, bool record, size_t *next) {
        for (bool offset_table = true;; offset_table = false) {
            if (end - pos < 8) return fail("encapsulated pixel data ends early (truncated?)");
            uint16_t g = u16(pos, enc), e = u16(pos + 2, enc);
            uint32_t len = u32(pos + 4, enc);
            pos += 8;
            if (g == 0xfffe && e == 0xe0dd) {
                if (len != 0) return fail("a sequence delimiter has a length (corrupt file?)");
                break;
            }
            if (g != 0xfffe || e != 0xe000 || len == 0xffffffffu)
                return fail("encapsulated pixel data holds (%04X,%04X), not a fragment", g, e);
            if (len > end - pos) return fail("encapsulated pixel data ends early (truncated?)");
            if (record && !offset_table) lay_->fragments.emplace_back(pos, len);
            pos += len;
        }
        *next = pos;
        return true;
    }
};

// Reads the file meta information (group 0002, always explicit VR little endian) at *pos and
// moves *pos past it. GDCM reads one tag beyond it, so a data set must follow.
bool read_meta(const uint8_t *p, size_t n, size_t *pos, layout *lay, std::string *why) {
    uint64_t group_end = 0; // from (0002,0000) File Meta Information Group Length, when present
    const size_t start = *pos;
    while (n - *pos >= 8 && p[*pos] == 0x02 && p[*pos + 1] == 0x00) {
        const uint8_t *b = p + *pos;
        unsigned e = b[2] | b[3] << 8;
        if (!is_vr(b + 4)) {
            *why = "the file meta information is not explicit VR";
            return false;
        }
        size_t hdr = 8;
        uint64_t vl = b[6] | b[7] << 8;
        if (long_length_vr(b + 4)) {
            if (n - *pos < 12) break;
            hdr = 12, vl = (uint64_t)b[8] | (uint64_t)b[9] << 8 | (uint64_t)b[10] << 16 |
                           (uint64_t)b[11] << 24;
        }
        if (vl == 0xffffffffu || vl > n - *pos - hdr) {
            *why = "the file meta information is cut short (truncated?)";
            return false;
        }
        // Without a group length first, GDCM falls back to parsers that go astray on anything
        // but the elements PS3.10 Table 7.1-1 defines.
        static const unsigned kKnown[] = {0x0000, 0x0001, 0x0002, 0x0003, 0x0010,
                                          0x0012, 0x0013, 0x0016, 0x0017, 0x0018,
                                          0x0026, 0x0027, 0x0028, 0x0100, 0x0102};
        if (group_end == 0 && !(*pos == start && e == 0x0000) &&
            std::find(std::begin(kKnown), std::end(kKnown), e) == std::end(kKnown)) {
            *why = "the file meta information holds an unknown element and no group length";
            return false;
        }
        const uint8_t *v = b + hdr;
        if (e == 0x0000 && vl == 4)
            group_end = *pos + hdr + vl + // counted from the end of this element
                        ((uint64_t)v[0] | (uint64_t)v[1] << 8 | (uint64_t)v[2] << 16 |
                         (uint64_t)v[3] << 24);
        if (e == 0x0010) lay->ts_uid = trim(std::string(reinterpret_cast<const char *>(v), vl));
        *pos += hdr + vl;
    }
    if (group_end && group_end != *pos) {
        *why = "the file meta information does not end where its group length says";
        return false;
    }
    if (group_end > n || (*pos > start && n - *pos < 8)) {
        *why = "the file ends in or just after its file meta information (truncated?)";
        return false;
    }
    return true;
}

// Inflates a deflated data set (raw deflate, PS3.5 A.5) into out.
bool inflate_all(const uint8_t *p, size_t n, std::string *out, std::string *why) {
    z_stream z{};
    if (inflateInit2(&z, -MAX_WBITS) != Z_OK) {
        *why = "zlib cannot start";
        return false;
    }
    z.next_in = const_cast<Bytef *>(p);
    z.avail_in = (uInt)std::min(n, (size_t)UINT32_MAX);
    int rc = Z_OK;
    char buf[1 << 16];
    while (rc == Z_OK) {
        z.next_out = reinterpret_cast<Bytef *>(buf);
        z.avail_out = sizeof buf;
        rc = inflate(&z, Z_NO_FLUSH);
        out->append(buf, sizeof buf - z.avail_out);
        if (out->size() > ((size_t)1 << 32)) rc = Z_MEM_ERROR;
        if (rc == Z_BUF_ERROR && z.avail_in == 0) break; // input ended early
    }
    inflateEnd(&z);
    if (rc != Z_STREAM_END) {
        *why = "the deflated data set is cut short or corrupt (truncated?)";
        return false;
    }
    return true;
}

// The encoding of a data set without file meta information, guessed from its first element the
// way DICOM PS3.5 Annex A suggests (GDCM guesses the same way).
bool guess_encoding(const uint8_t *b, size_t n, encoding *enc) {
    if (n < 8) return false;
    enc->big_endian = b[0] == 0 && b[1] != 0;
    enc->explicit_vr = is_vr(b + 4);
    unsigned group = enc->big_endian ? (b[0] << 8 | b[1]) : (b[1] << 8 | b[0]);
    return group >= 0x0002 && group <= 0x00ff;
}

// Maps path and walks it (up to Pixel Data only when stop_at_pixels). Fails, naming the file,
// unless the whole structure checks out.
mt_status check_structure(const char *path, bool stop_at_pixels, layout *lay) {
    MT_TRY(map_file(path, &lay->file));
    const uint8_t *p = lay->file.p;
    size_t n = lay->file.n;
    lay->part10 = n >= 132 && memcmp(p + 128, "DICM", 4) == 0;
    size_t pos = lay->part10 ? 132 : 0;
    std::string why;
    if (!read_meta(p, n, &pos, lay, &why))
        return lay->part10 ? mt_fail(MT_ERR_FORMAT, "%s: %s", path, why.c_str())
                           : mt_fail(MT_ERR_FORMAT, "%s: not a DICOM file", path);
    encoding enc{true, false};
    if (lay->ts_uid == "1.2.840.10008.1.2")
        enc = {false, false};
    else if (lay->ts_uid == "1.2.840.10008.1.2.2")
        enc = {true, true};
    else if (lay->ts_uid.empty() && !guess_encoding(p + pos, n - pos, &enc))
        return lay->part10 ? mt_fail(MT_ERR_FORMAT,
                                     "%s: no transfer syntax in the file meta information, and "
                                     "the data set does not show its encoding",
                                     path)
                           : mt_fail(MT_ERR_FORMAT, "%s: not a DICOM file", path);
    lay->ds = p + pos, lay->ds_n = n - pos;
    if (lay->ts_uid == "1.2.840.10008.1.2.1.99") {
        if (!inflate_all(lay->ds, lay->ds_n, &lay->inflated, &why))
            return mt_fail(MT_ERR_FORMAT, "%s: %s", path, why.c_str());
        lay->ds = reinterpret_cast<const uint8_t *>(lay->inflated.data());
        lay->ds_n = lay->inflated.size();
    }
    walker w(lay->ds, lay->ds_n, lay);
    bool ok = w.top(0, enc, stop_at_pixels);
    if (!ok && enc.explicit_vr && !enc.big_endian && lay->ds_n >= 8 && !is_vr(lay->ds + 4)) {
        // Some writers label an implicit VR data set as explicit. GDCM reads those, but only
        // after a first, explicit attempt that allocates whatever length it misreads (1.3 GB for
        // a 4 KB file): refused, with a name for the problem.
        walker implicit(lay->ds, lay->ds_n, lay);
        if (implicit.top(0, encoding{false, false}, stop_at_pixels))
            return mt_fail(MT_ERR_FORMAT,
                           "%s: the data set is implicit VR, but its transfer syntax %s says "
                           "explicit (a writer's bug; convert the file, e.g. with dcmconv)",
                           path, uid_name(lay->ts_uid).c_str());
    }
    if (!ok) {
        if (!lay->part10 && lay->ts_uid.empty())
            return mt_fail(MT_ERR_FORMAT, "%s: not a DICOM file", path);
        return mt_fail(MT_ERR_FORMAT, "%s: truncated or corrupt DICOM file: %s", path,
                       w.why.c_str());
    }
    return MT_OK;
}

// ---- codestream headers ---------------------------------------------------------------------
//
// GDCM's codecs, too, assert when a codestream's own header disagrees with the DICOM header (the
// decoded frame would not fit the buffer sized from Rows and Columns). So the header of every
// frame's codestream is read here first and compared: size, components, precision, and the kind
// of codestream the transfer syntax promises.

struct frame_header {
    unsigned rows = 0, cols = 0, components = 0, precision = 0, marker = 0;
};

unsigned be16(const uint8_t *p) {
    return (unsigned)p[0] << 8 | p[1];
}
uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

// The frame header (SOFn, or SOF55 for JPEG-LS) of a JPEG or JPEG-LS stream, read through every
// marker segment up to the first scan. GDCM asserts when libjpeg warns while reading these
// headers, so what libjpeg would warn about is refused here: bytes between segments, a JFIF
// version other than 1.x, an Adobe colour transform other than 0 or 1.
bool jpeg_frame(const uint8_t *p, size_t n, frame_header *fh) {
    if (n < 4 || p[0] != 0xff || p[1] != 0xd8) return false;
    size_t i = 2;
    bool have_frame = false;
    while (i + 4 <= n) {
        if (p[i] != 0xff) return false;
        unsigned m = p[i + 1];
        if (m == 0xff) { // fill byte
            i++;
            continue;
        }
        if (m == 0x01 || (m >= 0xd0 && m <= 0xd7)) { // markers without a length
            i += 2;
            continue;
        }
        if (m == 0xd8 || m == 0xd9) return false; // a second start, or the end before a scan
        size_t len = be16(p + i + 2);
        if (len < 2 || len > n - i - 2) return false;
        const uint8_t *seg = p + i + 4;   // the segment's payload, len - 2 bytes
        if (m == 0xda) return have_frame; // start of scan: the headers are complete
        if (m == 0xe0 && len >= 9 && memcmp(seg, "JFIF", 5) == 0 && seg[5] != 1) return false;
        if (m == 0xee && len >= 14 && memcmp(seg, "Adobe", 5) == 0 && seg[11] > 1) return false;
        bool sof = (m >= 0xc0 && m <= 0xcf && m != 0xc4 && m != 0xc8 && m != 0xcc) || m == 0xf7;
        if (sof) {
            if (len < 8 || have_frame) return false;
            have_frame = true;
            fh->marker = m;
            fh->precision = seg[0];
            fh->rows = be16(seg + 1);
            fh->cols = be16(seg + 3);
            fh->components = seg[5];
        }
        i += 2 + len;
    }
    return false;
}

// The image size (SIZ) of a JPEG 2000 codestream, bare or inside a JP2 file. Components must not
// be subsampled.
bool j2k_frame(const uint8_t *p, size_t n, frame_header *fh) {
    const uint8_t *soc = static_cast<const uint8_t *>(
        memmem(p, std::min(n, (size_t)1 << 16), "\xff\x4f\xff\x51", 4));
    if (!soc) return false;
    size_t at = (size_t)(soc - p) + 4, left = n - at;
    if (left < 38) return false;
    const uint8_t *z = p + at;
    unsigned lsiz = be16(z), csiz = be16(z + 36);
    uint32_t x = be32(z + 4), y = be32(z + 8), x0 = be32(z + 12), y0 = be32(z + 16);
    if (csiz == 0 || lsiz != 38 + 3 * csiz || left < lsiz || x < x0 || y < y0) return false;
    fh->cols = x - x0, fh->rows = y - y0, fh->components = csiz, fh->marker = 0x51;
    for (unsigned c = 0; c < csiz; c++) {
        const uint8_t *ssiz = z + 38 + 3 * c;
        if (ssiz[1] != 1 || ssiz[2] != 1) return false;
        fh->precision = std::max(fh->precision, (unsigned)(ssiz[0] & 0x7f) + 1);
    }
    return true;
}

// An RLE frame: a 64-byte header with one segment per byte of each sample, offsets in order.
bool rle_ok(const uint8_t *p, size_t n, unsigned segments) {
    if (n < 64 || le32(p) != segments) return false;
    uint32_t prev = 0;
    for (unsigned k = 0; k < segments; k++) {
        uint32_t off = le32(p + 4 + 4 * k);
        if ((k == 0 && off != 64) || (k > 0 && off <= prev) || off >= n) return false;
        prev = off;
    }
    return true;
}

mt_status check_codestreams(const char *path, const layout &l, gdcm::TransferSyntax::TSType ts,
                            const mt_dicom_image *d) {
    using TS = gdcm::TransferSyntax;
    if (l.fragments.empty())
        return mt_fail(MT_ERR_FORMAT, "%s: encapsulated pixel data without fragments", path);
    if (l.fragments.size() < (size_t)d->frames) // every frame has a fragment of its own
        return mt_fail(MT_ERR_FORMAT, "%s: %zu pixel data fragments for %d frames", path,
                       l.fragments.size(), d->frames);
    unsigned bytes = (unsigned)d->bits_allocated / 8;
    if (ts == TS::RLELossless) {
        for (int f = 0; f < d->frames; f++)
            if (!rle_ok(l.ds + l.fragments[f].first, l.fragments[f].second,
                        (unsigned)d->samples_per_pixel * bytes))
                return mt_fail(MT_ERR_FORMAT, "%s: frame %d: bad RLE header (corrupt file?)", path,
                               f + 1);
        return MT_OK;
    }
    bool j2k = ts == TS::JPEG2000Lossless || ts == TS::JPEG2000 ||
               ts == TS::JPEG2000Part2Lossless || ts == TS::JPEG2000Part2;
    bool jls = ts == TS::JPEGLSLossless || ts == TS::JPEGLSNearLossless;
    bool lossless_jpeg = ts == TS::JPEGLosslessProcess14 || ts == TS::JPEGLosslessProcess14_1;
    const char *kind = j2k ? "JPEG 2000" : jls ? "JPEG-LS" : "JPEG";
    int checked = 0;
    for (const auto &frag : l.fragments) {
        const uint8_t *p = l.ds + frag.first;
        size_t n = frag.second;
        bool starts =
            j2k ? (n >= 4 && (memcmp(p, "\xff\x4f\xff\x51", 4) == 0 ||
                              memcmp(p, "\x00\x00\x00\x0cjP  ", std::min(n, (size_t)8)) == 0))
                : (n >= 2 && p[0] == 0xff && p[1] == 0xd8);
        if (!starts) continue; // the rest of a frame split over fragments
        frame_header fh;
        if (!(j2k ? j2k_frame(p, n, &fh) : jpeg_frame(p, n, &fh)))
            return mt_fail(MT_ERR_FORMAT, "%s: unreadable %s frame header (corrupt file?)", path,
                           kind);
        bool marker_ok = j2k || (jls             ? fh.marker == 0xf7
                                 : lossless_jpeg ? (fh.marker == 0xc3 || fh.marker == 0xc7)
                                                 : (fh.marker >= 0xc0 && fh.marker <= 0xc3));
        if (!marker_ok)
            return mt_fail(MT_ERR_FORMAT,
                           "%s: the %s stream (marker FF%02X) is not what transfer "
                           "syntax %s holds (corrupt file?)",
                           path, kind, fh.marker, uid_name(l.ts_uid).c_str());
        if ((int)fh.rows != d->rows || (int)fh.cols != d->cols ||
            (int)fh.components != d->samples_per_pixel || fh.precision < 1 ||
            fh.precision > (unsigned)d->bits_allocated)
            return mt_fail(MT_ERR_FORMAT,
                           "%s: the %s stream is %ux%u, %u component(s) of %u bits; the header "
                           "says %dx%d, %d of %d bits (corrupt file?)",
                           path, kind, fh.rows, fh.cols, fh.components, fh.precision, d->rows,
                           d->cols, d->samples_per_pixel, d->bits_allocated);
        checked++;
    }
    if (!checked) return mt_fail(MT_ERR_FORMAT, "%s: no %s stream in the pixel data", path, kind);
    return MT_OK;
}

mt_status gdcm_failure(const char *path) {
    return mt_fail(MT_ERR_FORMAT, "%s: GDCM cannot parse the data set (corrupt file?)", path);
}

// ---- transfer syntaxes -----------------------------------------------------------------------

struct syntax_info {
    const char *uid, *name;
    gdcm::TransferSyntax::TSType ts;
};
const syntax_info kSyntaxes[MT_TS_COUNT] = {
    {"1.2.840.10008.1.2", "implicit-le", gdcm::TransferSyntax::ImplicitVRLittleEndian},
    {"1.2.840.10008.1.2.1", "explicit-le", gdcm::TransferSyntax::ExplicitVRLittleEndian},
    {"1.2.840.10008.1.2.1.99", "deflate", gdcm::TransferSyntax::DeflatedExplicitVRLittleEndian},
    {"1.2.840.10008.1.2.5", "rle", gdcm::TransferSyntax::RLELossless},
    {"1.2.840.10008.1.2.4.50", "jpeg-baseline", gdcm::TransferSyntax::JPEGBaselineProcess1},
    {"1.2.840.10008.1.2.4.70", "jpeg-lossless", gdcm::TransferSyntax::JPEGLosslessProcess14_1},
    {"1.2.840.10008.1.2.4.80", "jpeg-ls", gdcm::TransferSyntax::JPEGLSLossless},
    {"1.2.840.10008.1.2.4.90", "jpeg2000", gdcm::TransferSyntax::JPEG2000Lossless},
};

// Transfer syntaxes whose pixel data GDCM 3.0 decodes.
bool decodable(gdcm::TransferSyntax::TSType t) {
    using TS = gdcm::TransferSyntax;
    switch (t) {
    case TS::ImplicitVRLittleEndian:
    case TS::ImplicitVRBigEndianPrivateGE:
    case TS::ExplicitVRLittleEndian:
    case TS::DeflatedExplicitVRLittleEndian:
    case TS::ExplicitVRBigEndian:
    case TS::JPEGBaselineProcess1:
    case TS::JPEGExtendedProcess2_4:
    case TS::JPEGLosslessProcess14:
    case TS::JPEGLosslessProcess14_1:
    case TS::JPEGLSLossless:
    case TS::JPEGLSNearLossless:
    case TS::JPEG2000Lossless:
    case TS::JPEG2000:
    case TS::JPEG2000Part2Lossless:
    case TS::JPEG2000Part2:
    case TS::RLELossless:
    case TS::ImplicitVRBigEndianACRNEMA:
        return true;
    default:
        return false;
    }
}

// ---- the header pass -------------------------------------------------------------------------

// What the header pass learns besides the mt_dicom_image fields.
struct header {
    gdcm::TransferSyntax ts;
    layout lay;
};

// Fills the descriptive fields of out from the data set (everything but the pixels).
void fill_fields(const gdcm::File &file, const header &h, mt_dicom_image *out) {
    const gdcm::DataSet &ds = file.GetDataSet();
    std::string s;
    double v;
    int n;
    out->rows = get_us(ds, gdcm::Tag(0x0028, 0x0010), &n) ? n : 0;
    out->cols = get_us(ds, gdcm::Tag(0x0028, 0x0011), &n) ? n : 0;
    out->samples_per_pixel = get_us(ds, gdcm::Tag(0x0028, 0x0002), &n) ? n : 1;
    out->bits_allocated = get_us(ds, gdcm::Tag(0x0028, 0x0100), &n) ? n : 0;
    out->bits_stored = get_us(ds, gdcm::Tag(0x0028, 0x0101), &n) ? n : out->bits_allocated;
    if (out->bits_stored <= 0 || out->bits_stored > out->bits_allocated)
        out->bits_stored = out->bits_allocated;
    out->pixel_representation = get_us(ds, gdcm::Tag(0x0028, 0x0103), &n) && n == 1 ? 1 : 0;
    out->frames = get_number(ds, gdcm::Tag(0x0028, 0x0008), &v) && v >= 1 && v < 1e9 ? (int)v : 1;
    copy_str(out->photometric, sizeof out->photometric,
             get_text(ds, gdcm::Tag(0x0028, 0x0004), &s) ? s : std::string());

    double slope = 1, intercept = 0;
    bool has_slope = get_number(ds, gdcm::Tag(0x0028, 0x1053), &slope);
    bool has_intercept = get_number(ds, gdcm::Tag(0x0028, 0x1052), &intercept);
    out->has_rescale = has_slope || has_intercept;
    out->rescale_slope = has_slope ? slope : 1;
    out->rescale_intercept = has_intercept ? intercept : 0;

    double center, width;
    out->has_window = get_number(ds, gdcm::Tag(0x0028, 0x1050), &center) &&
                      get_number(ds, gdcm::Tag(0x0028, 0x1051), &width);
    out->window_center = out->has_window ? center : 0;
    out->window_width = out->has_window ? width : 0;
    copy_str(out->voi_lut_function, sizeof out->voi_lut_function,
             get_text(ds, gdcm::Tag(0x0028, 0x1056), &s) ? first_value(s) : "LINEAR");

    out->has_spacing = false;
    for (gdcm::Tag t : {gdcm::Tag(0x0028, 0x0030), gdcm::Tag(0x0018, 0x1164)}) {
        if (!get_text(ds, t, &s)) continue;
        size_t bs = s.find('\\');
        double r, c;
        if (bs == std::string::npos || !parse_number(s.substr(0, bs), &r) ||
            !parse_number(first_value(s.substr(bs + 1)), &c) || r <= 0 || c <= 0)
            continue;
        out->has_spacing = true;
        out->pixel_spacing[0] = r, out->pixel_spacing[1] = c;
        break;
    }

    copy_str(out->modality, sizeof out->modality,
             get_text(ds, gdcm::Tag(0x0008, 0x0060), &s) ? s : std::string());
    copy_str(out->view_position, sizeof out->view_position,
             get_text(ds, gdcm::Tag(0x0018, 0x5101), &s) ? s : std::string());
    if (!get_text(ds, gdcm::Tag(0x0008, 0x0016), &s) &&
        !get_text(file.GetHeader(), gdcm::Tag(0x0002, 0x0002), &s))
        s.clear();
    copy_str(out->sop_class_uid, sizeof out->sop_class_uid, s);
    const char *ts_uid = gdcm::TransferSyntax::GetTSString(h.ts);
    copy_str(out->transfer_syntax_uid, sizeof out->transfer_syntax_uid,
             h.ts.IsValid() && ts_uid ? ts_uid : "");
    copy_str(out->transfer_syntax_name, sizeof out->transfer_syntax_name,
             h.ts.IsValid() ? uid_name(out->transfer_syntax_uid) : "unknown transfer syntax");

    copy_str(out->patient_id, sizeof out->patient_id,
             get_text(ds, gdcm::Tag(0x0010, 0x0020), &s) ? s : std::string());
    copy_str(out->study_instance_uid, sizeof out->study_instance_uid,
             get_text(ds, gdcm::Tag(0x0020, 0x000d), &s) ? s : std::string());
    copy_str(out->series_instance_uid, sizeof out->series_instance_uid,
             get_text(ds, gdcm::Tag(0x0020, 0x000e), &s) ? s : std::string());
    copy_str(out->sop_instance_uid, sizeof out->sop_instance_uid,
             get_text(ds, gdcm::Tag(0x0008, 0x0018), &s) ? s : std::string());
}

// GDCM reads the Image Pixel module (and the geometry tags below) with gdcm::Attribute, which
// asserts when an element has a VR other than the dictionary's; it also asserts on impossible
// values, and on LUT entries of other than 8 or 16 bits. Checks ds (the image, or its icon) first;
// what names the problem is `what` ("" or " (icon)").
mt_status check_pixel_module(const char *path, const gdcm::DataSet &ds, const char *what) {
    static const gdcm::Tag kGeometry[] = {gdcm::Tag(0x0018, 0x0050), gdcm::Tag(0x0018, 0x0088),
                                          gdcm::Tag(0x0018, 0x1164), gdcm::Tag(0x0020, 0x0032),
                                          gdcm::Tag(0x0020, 0x0037), gdcm::Tag(0x3004, 0x000c)};
    for (const gdcm::DataElement &de : ds.GetDES()) {
        const gdcm::Tag &t = de.GetTag();
        if (t.GetGroup() != 0x0028 &&
            std::find(std::begin(kGeometry), std::end(kGeometry), t) == std::end(kGeometry))
            continue;
        gdcm::VR vr = de.GetVR(), want = dict_vr(t);
        if (vr == gdcm::VR::INVALID || vr == gdcm::VR::UN || want == gdcm::VR::INVALID) continue;
        if (!want.Compatible(vr))
            return mt_fail(MT_ERR_FORMAT, "%s: element %s%s has VR %s, expected %s (corrupt file?)",
                           path, tag_str(t).c_str(), what, gdcm::VR::GetVRString(vr),
                           gdcm::VR::GetVRString(want));
    }
    // GDCM asserts that a Recognition Code (ACR-NEMA, retired) names ACR-NEMA.
    std::string code;
    if (get_text(ds, gdcm::Tag(0x0008, 0x0010), &code) && code.rfind("ACR-NEMA", 0) != 0 &&
        code.rfind("ACRNEMA", 0) != 0 && code.rfind("MIPS 2.0", 0) != 0)
        return mt_fail(MT_ERR_FORMAT,
                       "%s: Recognition Code (0008,0010) is not an ACR-NEMA one: GDCM cannot "
                       "read this file",
                       path);
    int allocated = 0, stored = 0, planar = 0, high_bit = 0, rep = 0;
    bool has_allocated = get_us(ds, gdcm::Tag(0x0028, 0x0100), &allocated);
    bool has_stored = get_us(ds, gdcm::Tag(0x0028, 0x0101), &stored);
    bool has_high = get_us(ds, gdcm::Tag(0x0028, 0x0102), &high_bit);
    get_us(ds, gdcm::Tag(0x0028, 0x0006), &planar);
    get_us(ds, gdcm::Tag(0x0028, 0x0103), &rep);
    if (!has_stored) stored = allocated;
    if (planar > 1 || rep > 1 || (has_allocated && (stored < 1 || stored > allocated)) ||
        (has_high && (high_bit < stored - 1 || high_bit >= allocated)))
        return mt_fail(MT_ERR_FORMAT,
                       "%s: impossible pixel description%s: planar configuration %d, bits "
                       "allocated/stored/high bit %d/%d/%d, pixel representation %d",
                       path, what, planar, allocated, stored, high_bit, rep);
    for (uint16_t e = 0x1101; e <= 0x1103; e++) { // palette LUT descriptors: entries, first, bits
        if (!ds.FindDataElement(gdcm::Tag(0x0028, e))) continue;
        const gdcm::ByteValue *bv = ds.GetDataElement(gdcm::Tag(0x0028, e)).GetByteValue();
        const uint8_t *b = bv ? reinterpret_cast<const uint8_t *>(bv->GetPointer()) : nullptr;
        int bits = b && bv->GetLength() == 6 ? b[4] | b[5] << 8 : 0;
        if (bits != 8 && bits != 16)
            return mt_fail(MT_ERR_FORMAT,
                           "%s: palette LUT descriptor (0028,%04X)%s: entries of %d bits (GDCM "
                           "reads 8 or 16)",
                           path, e, what, bits);
    }
    return MT_OK;
}

// The first item of the Icon Image Sequence, which GDCM reads as an image too, or nullptr.
const gdcm::DataSet *icon_of(const gdcm::DataSet &ds) {
    const gdcm::Tag icon(0x0088, 0x0200);
    if (!ds.FindDataElement(icon) || ds.GetDataElement(icon).IsEmpty()) return nullptr;
    const gdcm::SequenceOfItems *sq =
        dynamic_cast<const gdcm::SequenceOfItems *>(&ds.GetDataElement(icon).GetValue());
    return sq && sq->GetNumberOfItems() > 0 ? &sq->GetItem(1).GetNestedDataSet() : nullptr;
}

// The decimal strings GDCM reads for geometry: it indexes the values it could parse up to the
// count it expects, and asserts when there are fewer. (For RT Dose it also reads Number of Frames
// and one Grid Frame Offset Vector value per frame, whether they exist or not.)
mt_status check_geometry(const char *path, const gdcm::DataSet &ds, const mt_dicom_image *d) {
    bool rt_dose = strcmp(d->sop_class_uid, "1.2.840.10008.5.1.4.1.1.481.2") == 0;
    if (rt_dose && !ds.FindDataElement(gdcm::Tag(0x0028, 0x0008)))
        return mt_fail(MT_ERR_FORMAT,
                       "%s: RT Dose without Number of Frames (0028,0008): GDCM cannot read it",
                       path);
    const struct {
        gdcm::Tag tag;
        int count;
    } kDecimals[] = {{gdcm::Tag(0x0018, 0x0050), 1},
                     {gdcm::Tag(0x0018, 0x0088), 1},
                     {gdcm::Tag(0x0018, 0x1164), 2},
                     {gdcm::Tag(0x0020, 0x0032), 3},
                     {gdcm::Tag(0x0020, 0x0037), 6},
                     {gdcm::Tag(0x0028, 0x0030), 2},
                     {gdcm::Tag(0x0028, 0x1052), 1},
                     {gdcm::Tag(0x0028, 0x1053), 1},
                     {gdcm::Tag(0x3004, 0x000c), rt_dose ? d->frames : 1}};
    for (const auto &k : kDecimals) {
        std::string text, item;
        if (!get_text(ds, k.tag, &text)) continue;
        std::stringstream ss(text);
        int n = 0;
        double v;
        while (std::getline(ss, item, '\\')) {
            if (!parse_number(item, &v))
                return mt_fail(MT_ERR_FORMAT, "%s: element %s holds a value that is not a number",
                               path, tag_str(k.tag).c_str());
            n++;
        }
        if (n < k.count)
            return mt_fail(MT_ERR_FORMAT, "%s: element %s holds %d values, expected %d", path,
                           tag_str(k.tag).c_str(), n, k.count);
    }
    return MT_OK;
}

// Checks what can be checked before decoding: pixel data present, sizes, lengths, syntax.
mt_status check_header(const char *path, const gdcm::File &file, const header &h,
                       const mt_dicom_image *d) {
    const layout &l = h.lay;
    if (!l.has_pixels) {
        if (!l.part10 && !d->sop_class_uid[0])
            return mt_fail(MT_ERR_FORMAT, "%s: not a DICOM file", path);
        return mt_fail(MT_ERR_UNSUPPORTED, "%s: no pixel data (SOP class %s)", path,
                       uid_name(d->sop_class_uid).c_str());
    }
    if (!h.ts.IsValid() || !decodable(h.ts))
        return mt_fail(MT_ERR_UNSUPPORTED, "%s: transfer syntax %s: GDCM %s cannot decode it", path,
                       uid_name(l.ts_uid).c_str(), gdcm::Version::GetVersion());
    if (d->rows <= 0 || d->cols <= 0)
        return mt_fail(MT_ERR_FORMAT, "%s: image size is %d rows x %d columns", path, d->rows,
                       d->cols);
    if (d->bits_allocated != 8 && d->bits_allocated != 16 && d->bits_allocated != 32)
        return mt_fail(MT_ERR_UNSUPPORTED,
                       "%s: %d bits allocated per sample (medtrain reads 8, 16 or 32)", path,
                       d->bits_allocated);
    if (d->samples_per_pixel != 1 && d->samples_per_pixel != 3)
        return mt_fail(MT_ERR_UNSUPPORTED, "%s: %d samples per pixel (medtrain reads 1 or 3)", path,
                       d->samples_per_pixel);
    MT_TRY(check_pixel_module(path, file.GetDataSet(), ""));
    const gdcm::DataSet *icon = icon_of(file.GetDataSet());
    if (icon) MT_TRY(check_pixel_module(path, *icon, " (icon)"));
    MT_TRY(check_geometry(path, file.GetDataSet(), d));
    uint64_t decoded = (uint64_t)d->rows * (uint64_t)d->cols * (uint64_t)d->samples_per_pixel *
                       (uint64_t)(d->bits_allocated / 8) * (uint64_t)d->frames;
    if (decoded > ((uint64_t)4 << 30)) // GDCM decodes every frame at once
        return mt_fail(MT_ERR_UNSUPPORTED,
                       "%s: %d frames of %dx%d decode to %llu bytes (limit 4 GiB)", path, d->frames,
                       d->rows, d->cols, (unsigned long long)decoded);
    if (h.ts.IsEncapsulated() != l.encapsulated)
        return mt_fail(MT_ERR_FORMAT, "%s: pixel data is %s, but transfer syntax %s says otherwise",
                       path, l.encapsulated ? "encapsulated" : "native",
                       uid_name(l.ts_uid).c_str());
    // GDCM aborts on this (seen in the wild: RT Dose files cut down to one frame).
    const gdcm::DataSet &ds = file.GetDataSet();
    if (ds.FindDataElement(gdcm::Tag(0x0028, 0x0009)) &&
        !ds.FindDataElement(gdcm::Tag(0x0028, 0x0008)))
        return mt_fail(MT_ERR_FORMAT,
                       "%s: Frame Increment Pointer (0028,0009) without Number of Frames "
                       "(0028,0008): GDCM cannot read this file",
                       path);
    if (l.encapsulated) return check_codestreams(path, l, h.ts, d);
    if (l.pixel_vl == 0) return mt_fail(MT_ERR_FORMAT, "%s: zero-size pixel data", path);
    // The element must hold every frame (native pixels), and the file the element.
    // YBR_FULL_422 stores two chroma samples for every two pixels: 2 samples per pixel, not 3.
    uint64_t samples =
        strcmp(d->photometric, "YBR_FULL_422") == 0 ? 2 : (uint64_t)d->samples_per_pixel;
    uint64_t need =
        std::max(l.pixel_vl, (uint64_t)d->rows * (uint64_t)d->cols * samples *
                                 (uint64_t)(d->bits_allocated / 8) * (uint64_t)d->frames);
    uint64_t have = std::min(l.pixel_vl, l.pixel_available);
    if (have < need)
        return mt_fail(MT_ERR_FORMAT, "%s: pixel data is %llu bytes, expected %llu: truncated?",
                       path, (unsigned long long)have, (unsigned long long)need);
    return MT_OK;
}

// The header pass: checks the structure (the whole file, or up to Pixel Data), parses everything
// before Pixel Data with GDCM, fills out and checks what can be checked before decoding.
mt_status read_header(const char *path, bool whole_file, mt_dicom_image *out) {
    gdcm_quiet();
    header h;
    MT_TRY(check_structure(path, !whole_file, &h.lay));
    gdcm::Reader r;
    r.SetFileName(path);
    std::set<gdcm::Tag> skip{kPixelData};
    if (!r.ReadUpToTag(kPixelData, skip)) return gdcm_failure(path);
    h.ts = r.GetFile().GetHeader().GetDataSetTransferSyntax();
    *out = mt_dicom_image{};
    fill_fields(r.GetFile(), h, out);
    return check_header(path, r.GetFile(), h, out);
}

// ---- decoding --------------------------------------------------------------------------------

// Keeps the bits_stored bits of each sample (below high_bit) and sign-extends when signed.
template <class U> void mask_samples(void *px, size_t n, int bits, int stored, int high, bool sgn) {
    U *p = static_cast<U *>(px);
    int shift = high + 1 - stored;
    if (shift < 0) shift = 0;
    if (stored >= bits && shift == 0) return;
    U mask = (U)(stored >= (int)(8 * sizeof(U)) ? ~(U)0 : (U)(((U)1 << stored) - 1));
    U sign = (U)((U)1 << (stored - 1));
    for (size_t i = 0; i < n; i++) {
        U v = (U)((p[i] >> shift) & mask);
        if (sgn && (v & sign)) v = (U)(v | (U)~mask);
        p[i] = v;
    }
}

void mask_pixels(mt_dicom_image *d, int high_bit) {
    size_t n = (size_t)d->rows * d->cols * d->samples_per_pixel;
    bool sgn = d->pixel_representation == 1;
    if (d->bits_allocated == 8)
        mask_samples<uint8_t>(d->pixels, n, 8, d->bits_stored, high_bit, sgn);
    else if (d->bits_allocated == 16)
        mask_samples<uint16_t>(d->pixels, n, 16, d->bits_stored, high_bit, sgn);
    else
        mask_samples<uint32_t>(d->pixels, n, 32, d->bits_stored, high_bit, sgn);
}

// Copies the first frame of buf into d->pixels, interleaving planar (RRR..GGG..BBB..) samples.
void copy_first_frame(const char *buf, bool planar, mt_dicom_image *d) {
    size_t bps = (size_t)d->bits_allocated / 8, npx = (size_t)d->rows * d->cols;
    if (!planar || d->samples_per_pixel == 1) {
        memcpy(d->pixels, buf, d->pixel_bytes);
        return;
    }
    char *dst = static_cast<char *>(d->pixels);
    for (int s = 0; s < d->samples_per_pixel; s++)
        for (size_t i = 0; i < npx; i++)
            memcpy(dst + (i * d->samples_per_pixel + s) * bps, buf + (s * npx + i) * bps, bps);
}

// Swaps the 16-bit halves of every 32-bit sample.
void swap_halves(mt_dicom_image *d) {
    uint32_t *p = static_cast<uint32_t *>(d->pixels);
    for (size_t i = 0; i < d->pixel_bytes / 4; i++) p[i] = p[i] << 16 | p[i] >> 16;
}

mt_status decode(const char *path, mt_dicom_image *d) {
    gdcm::ImageReader ir;
    ir.SetFileName(path);
    if (!ir.Read())
        return mt_fail(MT_ERR_FORMAT, "%s: GDCM cannot read the image (%s)", path,
                       d->transfer_syntax_name);
    const gdcm::Image &img = ir.GetImage();
    std::vector<char> buf(img.GetBufferLength());
    if (buf.empty() || !img.GetBuffer(buf.data()))
        return mt_fail(MT_ERR_FORMAT,
                       "%s: GDCM cannot decode the pixel data (%s): corrupt or truncated?", path,
                       d->transfer_syntax_name);
    // After decoding, the image describes the pixels as GDCM returns them (JPEG and JPEG 2000
    // streams can say other things than the header); those values win over the header's.
    const gdcm::PixelFormat &pf = img.GetPixelFormat();
    int header_bits_stored = d->bits_stored, header_bits_allocated = d->bits_allocated;
    d->cols = (int)img.GetDimension(0);
    d->rows = (int)img.GetDimension(1);
    d->frames = img.GetNumberOfDimensions() > 2 ? (int)img.GetDimension(2) : 1;
    d->samples_per_pixel = pf.GetSamplesPerPixel();
    d->bits_allocated = pf.GetBitsAllocated();
    d->bits_stored = pf.GetBitsStored();
    d->pixel_representation = pf.GetPixelRepresentation() ? 1 : 0;
    const char *pi = img.GetPhotometricInterpretation().GetString();
    if (pi) copy_str(d->photometric, sizeof d->photometric, trim(pi));
    // GDCM returns YBR_FULL_422 data upsampled (three samples for every pixel) but keeps the name.
    if (strcmp(d->photometric, "YBR_FULL_422") == 0 && d->samples_per_pixel == 3)
        copy_str(d->photometric, sizeof d->photometric, "YBR_FULL");
    if (d->bits_allocated != 8 && d->bits_allocated != 16 && d->bits_allocated != 32)
        return mt_fail(MT_ERR_UNSUPPORTED,
                       "%s: %d bits allocated per sample (medtrain reads 8, 16 or 32)", path,
                       d->bits_allocated);
    if (d->samples_per_pixel != 1 && d->samples_per_pixel != 3)
        return mt_fail(MT_ERR_UNSUPPORTED, "%s: %d samples per pixel (medtrain reads 1 or 3)", path,
                       d->samples_per_pixel);
    if (d->rows <= 0 || d->cols <= 0)
        return mt_fail(MT_ERR_FORMAT, "%s: image size is %d rows x %d columns", path, d->rows,
                       d->cols);
    if (d->bits_stored <= 0 || d->bits_stored > d->bits_allocated)
        d->bits_stored = d->bits_allocated;
    d->pixel_bytes = (size_t)d->rows * d->cols * d->samples_per_pixel * (d->bits_allocated / 8);
    if (buf.size() < d->pixel_bytes)
        return mt_fail(MT_ERR_FORMAT, "%s: decoded pixel data is %zu bytes, expected %zu", path,
                       buf.size(), d->pixel_bytes);
    d->pixels = mt_alloc(d->pixel_bytes, "DICOM pixels");
    if (!d->pixels) return MT_ERR_NOMEM;
    copy_first_frame(buf.data(), img.GetPlanarConfiguration() == 1, d);
    if (img.GetTransferSyntax() == gdcm::TransferSyntax::ExplicitVRBigEndian &&
        d->bits_allocated == 32)
        swap_halves(d); // GDCM swaps big-endian 32-bit samples as two 16-bit words
    mask_pixels(d, pf.GetHighBit());
    // GDCM takes bits stored from a JPEG 2000 codestream's precision, which encoders (GDCM's own
    // among them) often set to bits allocated: 16 for 12-bit data. The header's smaller value is
    // the one that describes the values; the mask above used GDCM's, so no value is cut.
    if (header_bits_allocated == d->bits_allocated && header_bits_stored > 0 &&
        header_bits_stored < d->bits_stored)
        d->bits_stored = header_bits_stored;
    return MT_OK;
}

} // namespace

extern "C" mt_status mt_dicom_read_header(const char *path, mt_dicom_image *out) {
    if (!path || !out) return mt_fail(MT_ERR_ARG, "mt_dicom_read_header: NULL argument");
    *out = mt_dicom_image{};
    mt_status st =
        guarded(path, "reading the header", [&] { return read_header(path, false, out); });
    if (st != MT_OK) mt_dicom_image_free(out);
    return st;
}

extern "C" mt_status mt_dicom_read(const char *path, mt_dicom_image *out) {
    if (!path || !out) return mt_fail(MT_ERR_ARG, "mt_dicom_read: NULL argument");
    *out = mt_dicom_image{};
    mt_status st = guarded(path, "reading", [&] {
        MT_TRY(read_header(path, true, out));
        return decode(path, out);
    });
    if (st != MT_OK) mt_dicom_image_free(out);
    return st;
}

extern "C" void mt_dicom_image_free(mt_dicom_image *img) {
    if (!img) return;
    mt_free(img->pixels);
    *img = mt_dicom_image{};
}

extern "C" bool mt_dicom_is_image_sop_class(const char *uid) {
    // Single images a 2D model can train on. Not: SR, presentation states, key objects,
    // encapsulated documents, raw data, waveforms, RT plans/doses/structures, segmentations.
    static const char *const kImageClasses[] = {
        "1.2.840.10008.5.1.4.1.1.1",      // Computed Radiography
        "1.2.840.10008.5.1.4.1.1.1.1",    // Digital X-Ray, for presentation
        "1.2.840.10008.5.1.4.1.1.1.1.1",  // Digital X-Ray, for processing
        "1.2.840.10008.5.1.4.1.1.1.2",    // Digital Mammography X-Ray, for presentation
        "1.2.840.10008.5.1.4.1.1.1.2.1",  // Digital Mammography X-Ray, for processing
        "1.2.840.10008.5.1.4.1.1.1.3",    // Digital Intra-Oral X-Ray, for presentation
        "1.2.840.10008.5.1.4.1.1.1.3.1",  // Digital Intra-Oral X-Ray, for processing
        "1.2.840.10008.5.1.4.1.1.2",      // CT
        "1.2.840.10008.5.1.4.1.1.2.1",    // Enhanced CT
        "1.2.840.10008.5.1.4.1.1.4",      // MR
        "1.2.840.10008.5.1.4.1.1.4.1",    // Enhanced MR
        "1.2.840.10008.5.1.4.1.1.6.1",    // Ultrasound
        "1.2.840.10008.5.1.4.1.1.3.1",    // Ultrasound Multi-frame
        "1.2.840.10008.5.1.4.1.1.7",      // Secondary Capture
        "1.2.840.10008.5.1.4.1.1.7.1",    // Multi-frame Single Bit SC
        "1.2.840.10008.5.1.4.1.1.7.2",    // Multi-frame Grayscale Byte SC
        "1.2.840.10008.5.1.4.1.1.7.3",    // Multi-frame Grayscale Word SC
        "1.2.840.10008.5.1.4.1.1.7.4",    // Multi-frame True Color SC
        "1.2.840.10008.5.1.4.1.1.12.1",   // X-Ray Angiographic
        "1.2.840.10008.5.1.4.1.1.12.1.1", // Enhanced XA
        "1.2.840.10008.5.1.4.1.1.12.2",   // X-Ray Radiofluoroscopic
        "1.2.840.10008.5.1.4.1.1.12.2.1", // Enhanced XRF
        "1.2.840.10008.5.1.4.1.1.13.1.3", // Breast Tomosynthesis
        "1.2.840.10008.5.1.4.1.1.20",     // Nuclear Medicine
        "1.2.840.10008.5.1.4.1.1.128",    // PET
        "1.2.840.10008.5.1.4.1.1.77.1.1", // VL Endoscopic
        "1.2.840.10008.5.1.4.1.1.77.1.2", // VL Microscopic
        "1.2.840.10008.5.1.4.1.1.77.1.4", // VL Photographic
        "1.2.840.10008.5.1.4.1.1.77.1.6", // VL Whole Slide Microscopy
    };
    if (!uid) return false;
    for (const char *c : kImageClasses)
        if (strcmp(uid, c) == 0) return true;
    return false;
}

// ---- transfer syntax names -------------------------------------------------------------------

extern "C" const char *mt_dicom_syntax_uid(mt_dicom_syntax ts) {
    return (unsigned)ts < MT_TS_COUNT ? kSyntaxes[ts].uid : "";
}

extern "C" const char *mt_dicom_syntax_name(mt_dicom_syntax ts) {
    return (unsigned)ts < MT_TS_COUNT ? kSyntaxes[ts].name : "unknown";
}

extern "C" mt_status mt_dicom_syntax_parse(const char *name, mt_dicom_syntax *out) {
    std::string choices;
    for (int i = 0; i < MT_TS_COUNT; i++) {
        if (name && (strcmp(name, kSyntaxes[i].name) == 0 || strcmp(name, kSyntaxes[i].uid) == 0)) {
            *out = (mt_dicom_syntax)i;
            return MT_OK;
        }
        choices += std::string(i ? ", " : "") + kSyntaxes[i].name;
    }
    return mt_fail(MT_ERR_ARG, "unknown transfer syntax '%s' (choices: %s)", name ? name : "(null)",
                   choices.c_str());
}

// ---- writing ---------------------------------------------------------------------------------

namespace {

const char *kDxPresentation = "1.2.840.10008.5.1.4.1.1.1.1";
const char *kCrImage = "1.2.840.10008.5.1.4.1.1.1";

// A text element padded to even length (UI with NUL, the others with a space).
gdcm::DataElement text_element(const gdcm::Tag &t, gdcm::VR vr, std::string v) {
    if (v.size() % 2) v.push_back(vr == gdcm::VR::UI ? '\0' : ' ');
    gdcm::DataElement de(t);
    de.SetVR(vr);
    de.SetByteValue(v.data(), (uint32_t)v.size());
    return de;
}

// Converts backslash-separated numbers to the binary VR vr (little endian).
bool binary_value(gdcm::VR::VRType vr, const std::string &text, std::string *out) {
    std::stringstream ss(text);
    std::string item;
    out->clear();
    while (std::getline(ss, item, '\\')) {
        double v;
        if (!parse_number(item, &v)) return false;
        unsigned char b[8];
        size_t n;
        auto put = [&](uint64_t u, size_t bytes) {
            for (size_t i = 0; i < bytes; i++) b[i] = (unsigned char)(u >> (8 * i));
            n = bytes;
        };
        switch (vr) {
        case gdcm::VR::US:
            if (v < 0 || v > 65535 || v != (int)v) return false;
            put((uint64_t)v, 2);
            break;
        case gdcm::VR::SS:
            if (v < -32768 || v > 32767 || v != (int)v) return false;
            put((uint64_t)(uint16_t)(int16_t)v, 2);
            break;
        case gdcm::VR::UL:
            if (v < 0 || v > 4294967295.0 || v != (double)(uint32_t)v) return false;
            put((uint64_t)v, 4);
            break;
        case gdcm::VR::SL:
            if (v < -2147483648.0 || v > 2147483647.0 || v != (double)(int32_t)v) return false;
            put((uint64_t)(uint32_t)(int32_t)v, 4);
            break;
        case gdcm::VR::FL: {
            float f = (float)v;
            uint32_t u;
            memcpy(&u, &f, 4);
            put(u, 4);
            break;
        }
        case gdcm::VR::FD: {
            uint64_t u;
            memcpy(&u, &v, 8);
            put(u, 8);
            break;
        }
        default:
            return false;
        }
        out->append(reinterpret_cast<char *>(b), n);
    }
    return !out->empty();
}

// Tags mt_dicom_write sets itself from the spec.
bool written_from_spec(const gdcm::Tag &t) {
    if (t == kPixelData) return true;
    if (t.GetGroup() != 0x0028) return false;
    switch (t.GetElement()) {
    case 0x0002:
    case 0x0004:
    case 0x0006:
    case 0x0008:
    case 0x0010:
    case 0x0011:
    case 0x0100:
    case 0x0101:
    case 0x0102:
    case 0x0103:
        return true;
    default:
        return false;
    }
}

// Puts one caller-given tag into ds with its dictionary VR (LO for private tags).
mt_status add_tag(gdcm::DataSet &ds, const mt_dicom_tag &tag, const char *path) {
    gdcm::Tag t(tag.group, tag.element);
    if (!tag.value) return mt_fail(MT_ERR_ARG, "%s: tag %s has no value", path, tag_str(t).c_str());
    if (t.GetGroup() < 0x0008)
        return mt_fail(MT_ERR_ARG, "%s: tag %s: groups below 0008 (file meta) are written by GDCM",
                       path, tag_str(t).c_str());
    if (written_from_spec(t))
        return mt_fail(MT_ERR_ARG, "%s: tag %s is set from the write spec (pixels, size, bits)",
                       path, tag_str(t).c_str());
    if (t.IsPrivate()) {
        ds.Replace(text_element(t, gdcm::VR::LO, tag.value));
        return MT_OK;
    }
    gdcm::VR vr = dict_vr(t);
    gdcm::VR::VRType type = (gdcm::VR::VRType)vr;
    if (type == gdcm::VR::US_SS || type == gdcm::VR::US_SS_OW) type = gdcm::VR::US;
    if (type == gdcm::VR::INVALID)
        return mt_fail(MT_ERR_ARG, "%s: tag %s is not in the DICOM dictionary", path,
                       tag_str(t).c_str());
    if (gdcm::VR::IsASCII(type)) {
        if (strlen(tag.value) > 0xfffe)
            return mt_fail(MT_ERR_ARG, "%s: tag %s: value too long", path, tag_str(t).c_str());
        ds.Replace(text_element(t, type, tag.value));
        return MT_OK;
    }
    std::string bin;
    if (!binary_value(type, tag.value, &bin))
        return mt_fail(MT_ERR_ARG, "%s: tag %s (VR %s): cannot write the given text as that VR",
                       path, tag_str(t).c_str(), gdcm::VR::GetVRString(type));
    gdcm::DataElement de(t);
    de.SetVR(type);
    de.SetByteValue(bin.data(), (uint32_t)bin.size());
    ds.Replace(de);
    return MT_OK;
}

void set_text(gdcm::DataSet &ds, uint16_t g, uint16_t e, const std::string &v) {
    gdcm::Tag t(g, e);
    ds.Replace(text_element(t, dict_vr(t), v));
}

void set_us(gdcm::DataSet &ds, uint16_t g, uint16_t e, unsigned v) {
    gdcm::DataElement de(gdcm::Tag(g, e));
    de.SetVR(gdcm::VR::US);
    unsigned char b[2] = {(unsigned char)(v & 0xff), (unsigned char)(v >> 8)};
    de.SetByteValue(reinterpret_cast<char *>(b), 2);
    ds.Replace(de);
}

// "2.25." + the decimal value of 16 big-endian bytes (PS3.5 B.2: a UUID-derived UID).
std::string uid_from_bytes(const uint8_t in[16]) {
    uint8_t n[16];
    memcpy(n, in, 16);
    std::string digits;
    bool zero = false;
    while (!zero) {
        unsigned rem = 0;
        zero = true;
        for (int i = 0; i < 16; i++) { // n /= 10, remainder in rem
            unsigned cur = rem * 256 + n[i];
            n[i] = (uint8_t)(cur / 10);
            rem = cur % 10;
            if (n[i]) zero = false;
        }
        digits.push_back((char)('0' + rem));
    }
    std::reverse(digits.begin(), digits.end());
    return "2.25." + digits;
}

std::string random_uid() {
    std::random_device rd;
    uint8_t b[16];
    for (int i = 0; i < 16; i += 4) {
        uint32_t r = rd();
        memcpy(b + i, &r, 4);
    }
    return uid_from_bytes(b);
}

// Encodes the raw pixels of spec into the Pixel Data element for spec->syntax.
mt_status encode_pixels(const char *path, const mt_dicom_write_spec *spec, gdcm::DataElement *out) {
    const syntax_info &si = kSyntaxes[spec->syntax];
    size_t bytes = (size_t)spec->rows * spec->cols * (spec->bits_allocated / 8);
    gdcm::DataElement raw(kPixelData);
    raw.SetVR(spec->bits_allocated == 8 ? gdcm::VR::OB : gdcm::VR::OW);
    raw.SetByteValue(static_cast<const char *>(spec->pixels), (uint32_t)bytes);
    gdcm::TransferSyntax target(si.ts);
    if (!target.IsEncapsulated()) { // implicit, explicit, deflated: the writer handles it
        *out = raw;
        return MT_OK;
    }
    // GDCM filters hold their input through a reference-counted pointer: it must live on the heap.
    gdcm::SmartPointer<gdcm::Image> img = new gdcm::Image;
    img->SetNumberOfDimensions(2);
    img->SetDimension(0, (unsigned)spec->cols);
    img->SetDimension(1, (unsigned)spec->rows);
    img->SetPixelFormat(gdcm::PixelFormat(1, (unsigned short)spec->bits_allocated,
                                          (unsigned short)spec->bits_stored,
                                          (unsigned short)(spec->bits_stored - 1), 0));
    img->SetPhotometricInterpretation(
        gdcm::PhotometricInterpretation::GetPIType(spec->photometric));
    img->SetTransferSyntax(gdcm::TransferSyntax::ExplicitVRLittleEndian);
    img->SetDataElement(raw);
    gdcm::ImageChangeTransferSyntax change;
    change.SetTransferSyntax(target);
    change.SetInput(*img);
    if (!change.Change())
        return mt_fail(MT_ERR_UNSUPPORTED, "%s: GDCM could not encode %d-bit pixels as %s", path,
                       spec->bits_allocated, si.name);
    *out = change.GetOutput().GetDataElement();
    out->SetTag(kPixelData);
    out->SetVR(gdcm::VR::OB);
    return MT_OK;
}

mt_status check_spec(const char *path, const mt_dicom_write_spec *s) {
    if (!s->pixels) return mt_fail(MT_ERR_ARG, "%s: no pixels to write", path);
    if (s->rows <= 0 || s->cols <= 0 || s->rows > 65535 || s->cols > 65535)
        return mt_fail(MT_ERR_ARG, "%s: image size %d x %d (expected 1..65535 each)", path, s->rows,
                       s->cols);
    if (s->bits_allocated != 8 && s->bits_allocated != 16)
        return mt_fail(MT_ERR_ARG, "%s: bits allocated %d (expected 8 or 16)", path,
                       s->bits_allocated);
    if (s->bits_stored < 1 || s->bits_stored > s->bits_allocated)
        return mt_fail(MT_ERR_ARG, "%s: bits stored %d (expected 1..%d)", path, s->bits_stored,
                       s->bits_allocated);
    if (!s->photometric ||
        (strcmp(s->photometric, "MONOCHROME1") != 0 && strcmp(s->photometric, "MONOCHROME2") != 0))
        return mt_fail(MT_ERR_ARG, "%s: photometric '%s' (expected MONOCHROME1 or MONOCHROME2)",
                       path, s->photometric ? s->photometric : "(null)");
    if ((unsigned)s->syntax >= MT_TS_COUNT)
        return mt_fail(MT_ERR_ARG, "%s: unknown transfer syntax %d", path, (int)s->syntax);
    if (s->syntax == MT_TS_JPEG_BASELINE && s->bits_allocated != 8)
        return mt_fail(MT_ERR_ARG, "%s: JPEG baseline holds 8-bit pixels only (got %d bits)", path,
                       s->bits_allocated);
    if (s->n_tags && !s->tags)
        return mt_fail(MT_ERR_ARG, "%s: n_tags %zu but no tags", path, s->n_tags);
    uint16_t one = 1;
    unsigned char little;
    memcpy(&little, &one, 1);
    if (!little) return mt_fail(MT_ERR_UNSUPPORTED, "%s: writing needs a little-endian host", path);
    return MT_OK;
}

// Raw deflate (PS3.5 A.5: no zlib header) of in, appended to out.
bool deflate_into(const std::string &in, std::string *out) {
    z_stream z{};
    if (deflateInit2(&z, 6, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) return false;
    z.next_in = reinterpret_cast<Bytef *>(const_cast<char *>(in.data()));
    z.avail_in = (uInt)in.size();
    char buf[1 << 16];
    int rc = Z_OK;
    while (rc == Z_OK) {
        z.next_out = reinterpret_cast<Bytef *>(buf);
        z.avail_out = sizeof buf;
        rc = deflate(&z, Z_FINISH);
        out->append(buf, sizeof buf - z.avail_out);
    }
    deflateEnd(&z);
    return rc == Z_STREAM_END;
}

// Serialises file with gdcm::Writer (which completes the File Meta Information from the data
// set and its transfer syntax) and writes it atomically. Deflated data sets are compressed here:
// GDCM 3.0.21 asserts when it deflates an element over 8 MiB (`gdcmconv -d` does the same).
mt_status write_file(const char *path, gdcm::Writer &w) {
    std::ostringstream os;
    gdcm::File &file = w.GetFile();
    if (file.GetHeader().GetDataSetTransferSyntax() ==
        gdcm::TransferSyntax::DeflatedExplicitVRLittleEndian) {
        if (file.GetDataSet().GetLength<gdcm::ExplicitDataElement>() > (uint32_t)UINT32_MAX - 1)
            return mt_fail(MT_ERR_UNSUPPORTED, "%s: data set too large to deflate", path);
        file.GetHeader().FillFromDataSet(file.GetDataSet());
        file.GetHeader().Write(os); // preamble, "DICM", group 0002
        std::ostringstream plain;
        file.GetDataSet().Write<gdcm::ExplicitDataElement, gdcm::SwapperNoOp>(plain);
        std::string bytes = os.str();
        if (!plain || !os || !deflate_into(plain.str(), &bytes))
            return mt_fail(MT_ERR_FORMAT, "%s: could not serialise the deflated data set", path);
        return mt_file_write_atomic(path, bytes.data(), bytes.size());
    }
    w.SetStream(os);
    if (!w.Write())
        return mt_fail(MT_ERR_FORMAT, "%s: GDCM could not serialise the data set", path);
    const std::string bytes = os.str();
    return mt_file_write_atomic(path, bytes.data(), bytes.size());
}

mt_status write_dicom(const char *path, const mt_dicom_write_spec *spec) {
    gdcm_quiet();
    MT_TRY(check_spec(path, spec));
    gdcm::Writer w;
    gdcm::DataSet &ds = w.GetFile().GetDataSet();
    for (size_t i = 0; i < spec->n_tags; i++) MT_TRY(add_tag(ds, spec->tags[i], path));

    std::string modality, sop_class;
    get_text(ds, gdcm::Tag(0x0008, 0x0060), &modality);
    if (!get_text(ds, gdcm::Tag(0x0008, 0x0016), &sop_class)) {
        sop_class = modality == "CR" ? kCrImage : kDxPresentation;
        set_text(ds, 0x0008, 0x0016, sop_class);
    }
    std::string tmp;
    if (!get_text(ds, gdcm::Tag(0x0008, 0x0018), &tmp)) set_text(ds, 0x0008, 0x0018, random_uid());
    if (sop_class == kDxPresentation && !ds.FindDataElement(gdcm::Tag(0x0008, 0x0068)))
        set_text(ds, 0x0008, 0x0068, "FOR PRESENTATION");

    set_us(ds, 0x0028, 0x0002, 1);
    set_text(ds, 0x0028, 0x0004, spec->photometric);
    set_us(ds, 0x0028, 0x0010, (unsigned)spec->rows);
    set_us(ds, 0x0028, 0x0011, (unsigned)spec->cols);
    set_us(ds, 0x0028, 0x0100, (unsigned)spec->bits_allocated);
    set_us(ds, 0x0028, 0x0101, (unsigned)spec->bits_stored);
    set_us(ds, 0x0028, 0x0102, (unsigned)spec->bits_stored - 1);
    set_us(ds, 0x0028, 0x0103, 0);

    gdcm::DataElement pixels;
    MT_TRY(encode_pixels(path, spec, &pixels));
    if (spec->syntax == MT_TS_JPEG_BASELINE) { // PS3.3 C.7.6.1.1.5: say the image is lossy
        const gdcm::SequenceOfFragments *sf = pixels.GetSequenceOfFragments();
        double raw = (double)spec->rows * spec->cols,
               enc = sf ? (double)sf->ComputeByteLength() : 0;
        char ratio[32];
        snprintf(ratio, sizeof ratio, "%.2f", enc > 0 ? raw / enc : 1.0);
        set_text(ds, 0x0028, 0x2110, "01");
        set_text(ds, 0x0028, 0x2112, ratio);
        set_text(ds, 0x0028, 0x2114, "ISO_10918_1");
    }
    ds.Replace(pixels);
    w.GetFile().GetHeader().SetDataSetTransferSyntax(
        gdcm::TransferSyntax(kSyntaxes[spec->syntax].ts));
    return write_file(path, w);
}

} // namespace

extern "C" mt_status mt_dicom_write(const char *path, const mt_dicom_write_spec *spec) {
    if (!path || !spec) return mt_fail(MT_ERR_ARG, "mt_dicom_write: NULL argument");
    return guarded(path, "writing", [&] { return write_dicom(path, spec); });
}

// ---- de-identification -----------------------------------------------------------------------

namespace {

enum action : char {
    REMOVE = 'X', // X: remove the element
    EMPTY = 'Z',  // Z: keep it with a zero-length value
};

// DICOM PS3.15 (2024) Annex E, Table E.1-1, Basic Application Level Confidentiality Profile:
// the attributes whose basic-profile action is X (remove) or Z (empty). Where the table allows a
// choice (X/Z, Z/D, X/D, ...) this keeps the simplest safe one: Z for attributes that are type 2
// in common image IODs, X otherwise. Attributes with action U (UIDs), names (PN) and dates/times
// are also handled by the generic rules in anonymize_set(), and all private tags are removed.
struct profile_entry {
    uint16_t group, element;
    action act;
};
const profile_entry kBasicProfile[] = {
    {0x0008, 0x0012, REMOVE}, // Instance Creation Date
    {0x0008, 0x0013, REMOVE}, // Instance Creation Time
    {0x0008, 0x0015, REMOVE}, // Instance Coercion DateTime
    {0x0008, 0x0020, EMPTY},  // Study Date
    {0x0008, 0x0021, REMOVE}, // Series Date
    {0x0008, 0x0022, REMOVE}, // Acquisition Date
    {0x0008, 0x0023, EMPTY},  // Content Date
    {0x0008, 0x0024, REMOVE}, // Overlay Date
    {0x0008, 0x0025, REMOVE}, // Curve Date
    {0x0008, 0x002a, REMOVE}, // Acquisition DateTime
    {0x0008, 0x0030, EMPTY},  // Study Time
    {0x0008, 0x0031, REMOVE}, // Series Time
    {0x0008, 0x0032, REMOVE}, // Acquisition Time
    {0x0008, 0x0033, EMPTY},  // Content Time
    {0x0008, 0x0034, REMOVE}, // Overlay Time
    {0x0008, 0x0035, REMOVE}, // Curve Time
    {0x0008, 0x0050, EMPTY},  // Accession Number
    {0x0008, 0x0080, REMOVE}, // Institution Name
    {0x0008, 0x0081, REMOVE}, // Institution Address
    {0x0008, 0x0082, REMOVE}, // Institution Code Sequence
    {0x0008, 0x0090, EMPTY},  // Referring Physician's Name
    {0x0008, 0x0092, REMOVE}, // Referring Physician's Address
    {0x0008, 0x0094, REMOVE}, // Referring Physician's Telephone Numbers
    {0x0008, 0x0096, REMOVE}, // Referring Physician Identification Sequence
    {0x0008, 0x009c, EMPTY},  // Consulting Physician's Name
    {0x0008, 0x009d, REMOVE}, // Consulting Physician Identification Sequence
    {0x0008, 0x0201, REMOVE}, // Timezone Offset From UTC
    {0x0008, 0x1010, REMOVE}, // Station Name
    {0x0008, 0x1030, REMOVE}, // Study Description
    {0x0008, 0x103e, REMOVE}, // Series Description
    {0x0008, 0x1040, REMOVE}, // Institutional Department Name
    {0x0008, 0x1041, REMOVE}, // Institutional Department Type Code Sequence
    {0x0008, 0x1048, REMOVE}, // Physician(s) of Record
    {0x0008, 0x1049, REMOVE}, // Physician(s) of Record Identification Sequence
    {0x0008, 0x1050, REMOVE}, // Performing Physicians' Name
    {0x0008, 0x1052, REMOVE}, // Performing Physician Identification Sequence
    {0x0008, 0x1060, REMOVE}, // Name of Physician(s) Reading Study
    {0x0008, 0x1062, REMOVE}, // Physician(s) Reading Study Identification Sequence
    {0x0008, 0x1070, REMOVE}, // Operators' Name
    {0x0008, 0x1072, REMOVE}, // Operator Identification Sequence
    {0x0008, 0x1080, REMOVE}, // Admitting Diagnoses Description
    {0x0008, 0x1084, REMOVE}, // Admitting Diagnoses Code Sequence
    {0x0008, 0x1110, REMOVE}, // Referenced Study Sequence
    {0x0008, 0x1111, REMOVE}, // Referenced Performed Procedure Step Sequence
    {0x0008, 0x1120, REMOVE}, // Referenced Patient Sequence
    {0x0008, 0x2111, REMOVE}, // Derivation Description
    {0x0008, 0x4000, REMOVE}, // Identifying Comments
    {0x0010, 0x0010, EMPTY},  // Patient's Name
    {0x0010, 0x0021, REMOVE}, // Issuer of Patient ID
    {0x0010, 0x0022, REMOVE}, // Type of Patient ID
    {0x0010, 0x0024, REMOVE}, // Issuer of Patient ID Qualifiers Sequence
    {0x0010, 0x0030, EMPTY},  // Patient's Birth Date
    {0x0010, 0x0032, REMOVE}, // Patient's Birth Time
    {0x0010, 0x0033, REMOVE}, // Patient's Birth Date in Alternative Calendar
    {0x0010, 0x0034, REMOVE}, // Patient's Death Date in Alternative Calendar
    {0x0010, 0x0035, REMOVE}, // Patient's Alternative Calendar
    {0x0010, 0x0040, EMPTY},  // Patient's Sex
    {0x0010, 0x0050, REMOVE}, // Patient's Insurance Plan Code Sequence
    {0x0010, 0x0101, REMOVE}, // Patient's Primary Language Code Sequence
    {0x0010, 0x0102, REMOVE}, // Patient's Primary Language Modifier Code Sequence
    {0x0010, 0x1000, REMOVE}, // Other Patient IDs
    {0x0010, 0x1001, REMOVE}, // Other Patient Names
    {0x0010, 0x1002, REMOVE}, // Other Patient IDs Sequence
    {0x0010, 0x1005, REMOVE}, // Patient's Birth Name
    {0x0010, 0x1010, REMOVE}, // Patient's Age
    {0x0010, 0x1020, REMOVE}, // Patient's Size
    {0x0010, 0x1030, REMOVE}, // Patient's Weight
    {0x0010, 0x1040, REMOVE}, // Patient's Address
    {0x0010, 0x1050, REMOVE}, // Insurance Plan Identification
    {0x0010, 0x1060, REMOVE}, // Patient's Mother's Birth Name
    {0x0010, 0x1080, REMOVE}, // Military Rank
    {0x0010, 0x1081, REMOVE}, // Branch of Service
    {0x0010, 0x1090, REMOVE}, // Medical Record Locator
    {0x0010, 0x1100, REMOVE}, // Referenced Patient Photo Sequence
    {0x0010, 0x2000, REMOVE}, // Medical Alerts
    {0x0010, 0x2110, REMOVE}, // Allergies
    {0x0010, 0x2150, REMOVE}, // Country of Residence
    {0x0010, 0x2152, REMOVE}, // Region of Residence
    {0x0010, 0x2154, REMOVE}, // Patient's Telephone Numbers
    {0x0010, 0x2155, REMOVE}, // Patient's Telecom Information
    {0x0010, 0x2160, REMOVE}, // Ethnic Group
    {0x0010, 0x2180, REMOVE}, // Occupation
    {0x0010, 0x21a0, REMOVE}, // Smoking Status
    {0x0010, 0x21b0, REMOVE}, // Additional Patient History
    {0x0010, 0x21c0, REMOVE}, // Pregnancy Status
    {0x0010, 0x21d0, REMOVE}, // Last Menstrual Date
    {0x0010, 0x21f0, REMOVE}, // Patient's Religious Preference
    {0x0010, 0x2203, REMOVE}, // Patient's Sex Neutered
    {0x0010, 0x2297, REMOVE}, // Responsible Person
    {0x0010, 0x2299, REMOVE}, // Responsible Organization
    {0x0010, 0x4000, REMOVE}, // Patient Comments
    {0x0018, 0x1000, REMOVE}, // Device Serial Number
    {0x0018, 0x1004, REMOVE}, // Plate ID
    {0x0018, 0x1005, REMOVE}, // Generator ID
    {0x0018, 0x1007, REMOVE}, // Cassette ID
    {0x0018, 0x1008, REMOVE}, // Gantry ID
    {0x0018, 0x1009, REMOVE}, // Unique Device Identifier
    {0x0018, 0x100a, REMOVE}, // UDI Sequence
    {0x0018, 0x1030, REMOVE}, // Protocol Name
    {0x0018, 0x1400, REMOVE}, // Acquisition Device Processing Description
    {0x0018, 0x4000, REMOVE}, // Acquisition Comments
    {0x0018, 0x700a, REMOVE}, // Detector ID
    {0x0018, 0x9424, REMOVE}, // Acquisition Protocol Description
    {0x0018, 0xa003, REMOVE}, // Contribution Description
    {0x0020, 0x0010, EMPTY},  // Study ID
    {0x0020, 0x4000, REMOVE}, // Image Comments
    {0x0020, 0x9158, REMOVE}, // Frame Comments
    {0x0032, 0x0012, REMOVE}, // Study ID Issuer
    {0x0032, 0x1020, REMOVE}, // Scheduled Study Location
    {0x0032, 0x1021, REMOVE}, // Scheduled Study Location AE Title
    {0x0032, 0x1030, REMOVE}, // Reason for Study
    {0x0032, 0x1032, REMOVE}, // Requesting Physician
    {0x0032, 0x1033, REMOVE}, // Requesting Service
    {0x0032, 0x1060, REMOVE}, // Requested Procedure Description
    {0x0032, 0x1070, REMOVE}, // Requested Contrast Agent
    {0x0032, 0x4000, REMOVE}, // Study Comments
    {0x0038, 0x0010, REMOVE}, // Admission ID
    {0x0038, 0x0011, REMOVE}, // Issuer of Admission ID
    {0x0038, 0x001e, REMOVE}, // Scheduled Patient Institution Residence
    {0x0038, 0x0020, REMOVE}, // Admitting Date
    {0x0038, 0x0021, REMOVE}, // Admitting Time
    {0x0038, 0x0040, REMOVE}, // Discharge Diagnosis Description
    {0x0038, 0x0050, REMOVE}, // Special Needs
    {0x0038, 0x0060, REMOVE}, // Service Episode ID
    {0x0038, 0x0061, REMOVE}, // Issuer of Service Episode ID
    {0x0038, 0x0062, REMOVE}, // Service Episode Description
    {0x0038, 0x0300, REMOVE}, // Current Patient Location
    {0x0038, 0x0400, REMOVE}, // Patient's Institution Residence
    {0x0038, 0x0500, REMOVE}, // Patient State
    {0x0038, 0x4000, REMOVE}, // Visit Comments
    {0x0040, 0x0001, REMOVE}, // Scheduled Station AE Title
    {0x0040, 0x0002, REMOVE}, // Scheduled Procedure Step Start Date
    {0x0040, 0x0003, REMOVE}, // Scheduled Procedure Step Start Time
    {0x0040, 0x0004, REMOVE}, // Scheduled Procedure Step End Date
    {0x0040, 0x0005, REMOVE}, // Scheduled Procedure Step End Time
    {0x0040, 0x0006, REMOVE}, // Scheduled Performing Physician's Name
    {0x0040, 0x0007, REMOVE}, // Scheduled Procedure Step Description
    {0x0040, 0x000b, REMOVE}, // Scheduled Performing Physician Identification Sequence
    {0x0040, 0x0010, REMOVE}, // Scheduled Station Name
    {0x0040, 0x0011, REMOVE}, // Scheduled Procedure Step Location
    {0x0040, 0x0241, REMOVE}, // Performed Station AE Title
    {0x0040, 0x0242, REMOVE}, // Performed Station Name
    {0x0040, 0x0243, REMOVE}, // Performed Location
    {0x0040, 0x0244, REMOVE}, // Performed Procedure Step Start Date
    {0x0040, 0x0245, REMOVE}, // Performed Procedure Step Start Time
    {0x0040, 0x0250, REMOVE}, // Performed Procedure Step End Date
    {0x0040, 0x0251, REMOVE}, // Performed Procedure Step End Time
    {0x0040, 0x0253, REMOVE}, // Performed Procedure Step ID
    {0x0040, 0x0254, REMOVE}, // Performed Procedure Step Description
    {0x0040, 0x0275, REMOVE}, // Request Attributes Sequence
    {0x0040, 0x0280, REMOVE}, // Comments on the Performed Procedure Step
    {0x0040, 0x0555, REMOVE}, // Acquisition Context Sequence
    {0x0040, 0x1001, REMOVE}, // Requested Procedure ID
    {0x0040, 0x1004, REMOVE}, // Patient Transport Arrangements
    {0x0040, 0x1005, REMOVE}, // Requested Procedure Location
    {0x0040, 0x1010, REMOVE}, // Names of Intended Recipients of Results
    {0x0040, 0x1011, REMOVE}, // Intended Recipients of Results Identification Sequence
    {0x0040, 0x1102, REMOVE}, // Person's Address
    {0x0040, 0x1103, REMOVE}, // Person's Telephone Numbers
    {0x0040, 0x1104, REMOVE}, // Person's Telecom Information
    {0x0040, 0x1400, REMOVE}, // Requested Procedure Comments
    {0x0040, 0x2001, REMOVE}, // Reason for the Imaging Service Request
    {0x0040, 0x2008, REMOVE}, // Order Entered By
    {0x0040, 0x2009, REMOVE}, // Order Enterer's Location
    {0x0040, 0x2010, REMOVE}, // Order Callback Phone Number
    {0x0040, 0x2011, REMOVE}, // Order Callback Telecom Information
    {0x0040, 0x2016, EMPTY},  // Placer Order Number / Imaging Service Request
    {0x0040, 0x2017, EMPTY},  // Filler Order Number / Imaging Service Request
    {0x0040, 0x2400, REMOVE}, // Imaging Service Request Comments
    {0x0040, 0x3001, REMOVE}, // Confidentiality Constraint on Patient Data Description
    {0x0040, 0xa027, REMOVE}, // Verifying Organization
    {0x0040, 0xa073, REMOVE}, // Verifying Observer Sequence
    {0x0040, 0xa075, REMOVE}, // Verifying Observer Name
    {0x0040, 0xa078, REMOVE}, // Author Observer Sequence
    {0x0040, 0xa07a, REMOVE}, // Participant Sequence
    {0x0040, 0xa07c, REMOVE}, // Custodial Organization Sequence
    {0x0040, 0xa088, REMOVE}, // Verifying Observer Identification Code Sequence
    {0x0040, 0xa160, REMOVE}, // Text Value
    {0x0040, 0xa730, REMOVE}, // Content Sequence
    {0x0050, 0x001b, REMOVE}, // Container Component ID
    {0x0070, 0x0001, REMOVE}, // Graphic Annotation Sequence
    {0x0070, 0x0084, EMPTY},  // Content Creator's Name
    {0x0070, 0x0086, REMOVE}, // Content Creator's Identification Code Sequence
    {0x0088, 0x0200, REMOVE}, // Icon Image Sequence
    {0x0088, 0x0904, REMOVE}, // Topic Title
    {0x0088, 0x0906, REMOVE}, // Topic Subject
    {0x0088, 0x0910, REMOVE}, // Topic Author
    {0x0088, 0x0912, REMOVE}, // Topic Keywords
    {0x0400, 0x0100, REMOVE}, // Digital Signature UID
    {0x0400, 0x0402, REMOVE}, // Referenced Digital Signature Sequence
    {0x0400, 0x0403, REMOVE}, // Referenced SOP Instance MAC Sequence
    {0x0400, 0x0404, REMOVE}, // MAC
    {0x0400, 0x0500, REMOVE}, // Encrypted Attributes Sequence
    {0x0400, 0x0550, REMOVE}, // Modified Attributes Sequence
    {0x0400, 0x0561, REMOVE}, // Original Attributes Sequence
    {0x2030, 0x0020, REMOVE}, // Text String
    {0x3006, 0x0002, REMOVE}, // Structure Set Label
    {0x3006, 0x0004, REMOVE}, // Structure Set Name
    {0x3006, 0x0006, REMOVE}, // Structure Set Description
    {0x4000, 0x0010, REMOVE}, // Arbitrary
    {0x4000, 0x4000, REMOVE}, // Text Comments
    {0x4008, 0x0040, REMOVE}, // Results ID
    {0x4008, 0x0042, REMOVE}, // Results ID Issuer
    {0x4008, 0x0300, REMOVE}, // Impressions
    {0x4008, 0x4000, REMOVE}, // Results Comments
    {0xfffa, 0xfffa, REMOVE}, // Digital Signatures Sequence
    {0xfffc, 0xfffc, REMOVE}, // Data Set Trailing Padding
};

// UI attributes that name a kind of thing (SOP classes, transfer syntaxes, coding schemes) rather
// than an instance: not identifying, and kept as they are. Every other UID is remapped.
const uint32_t kClassUids[] = {
    0x00020002, // Media Storage SOP Class UID
    0x00020010, // Transfer Syntax UID
    0x00020012, // Implementation Class UID
    0x00041510, // Referenced SOP Class UID in File
    0x00041512, // Referenced Transfer Syntax UID in File
    0x0004151a, // Referenced Related General SOP Class UID in File
    0x00080016, // SOP Class UID
    0x0008001a, // Related General SOP Class UID
    0x0008001b, // Original Specialized SOP Class UID
    0x00080062, // SOP Classes in Study
    0x0008010c, // Coding Scheme UID
    0x0008010d, // Context Group Extension Creator UID
    0x00080118, // Mapping Resource UID
    0x00081150, // Referenced SOP Class UID
    0x0008115a, // SOP Classes Supported
    0x04000010, // MAC Calculation Transfer Syntax UID
};

const std::unordered_map<uint32_t, action> &profile() {
    static const std::unordered_map<uint32_t, action> m = [] {
        std::unordered_map<uint32_t, action> r;
        for (const profile_entry &e : kBasicProfile) r[(uint32_t)e.group << 16 | e.element] = e.act;
        return r;
    }();
    return m;
}

bool is_class_uid(const gdcm::Tag &t) {
    uint32_t k = (uint32_t)t.GetGroup() << 16 | t.GetElement();
    return std::find(std::begin(kClassUids), std::end(kClassUids), k) != std::end(kClassUids);
}

struct anon_ctx {
    const uint8_t *key;
    size_t key_n;
    bool implicit;        // the data set is implicit VR (sequences may come as bytes)
    mt_status st = MT_OK; // first failure (an HMAC error)
    std::unordered_map<std::string, std::string> uids; // cache: old -> new
};

bool hmac(anon_ctx &c, const std::string &v, uint8_t out[MT_SHA256_BYTES]) {
    if (c.st != MT_OK) return false;
    c.st = mt_hmac_sha256(c.key, c.key_n, v.data(), v.size(), out);
    return c.st == MT_OK;
}

std::string new_uid(anon_ctx &c, const std::string &uid) {
    auto it = c.uids.find(uid);
    if (it != c.uids.end()) return it->second;
    uint8_t h[MT_SHA256_BYTES];
    if (!hmac(c, uid, h)) return "";
    std::string u = uid_from_bytes(h);
    c.uids[uid] = u;
    return u;
}

// The element with a new value of the same VR (padded as DICOM requires).
gdcm::DataElement with_value(const gdcm::DataElement &de, gdcm::VR vr, std::string v) {
    if (v.size() % 2) v.push_back(vr == gdcm::VR::UI ? '\0' : ' ');
    gdcm::DataElement out(de.GetTag());
    out.SetVR(de.GetVR());
    out.SetByteValue(v.data(), (uint32_t)v.size());
    return out;
}

gdcm::DataElement emptied(const gdcm::DataElement &de) {
    gdcm::DataElement out(de.GetTag());
    out.SetVR(de.GetVR());
    out.SetByteValue("", 0);
    return out;
}

gdcm::DataSet anonymize_set(const gdcm::DataSet &in, anon_ctx &c, int depth);

// DICOM values have even lengths; GDCM reads odd ones but asserts when writing them. Pads with a
// space (text) or a NUL (UI and binary).
gdcm::DataElement even(const gdcm::DataElement &de, gdcm::VR vr) {
    const gdcm::ByteValue *bv = de.GetByteValue();
    if (!bv || (bv->GetLength() % 2 == 0 && (uint32_t)de.GetVL() % 2 == 0)) return de;
    std::string v(bv->GetPointer(), bv->GetLength());
    bool text = gdcm::VR::IsASCII(vr) && vr != gdcm::VR::UI;
    if (v.size() % 2) v.push_back(text ? ' ' : '\0');
    gdcm::DataElement out(de.GetTag());
    out.SetVR(de.GetVR());
    out.SetByteValue(v.data(), (uint32_t)v.size());
    return out;
}

// Each value of a (possibly multi-valued) UI element mapped to its keyed replacement.
gdcm::DataElement remap_uids(const gdcm::DataElement &de, anon_ctx &c) {
    const gdcm::ByteValue *bv = de.GetByteValue();
    if (!bv || bv->GetLength() == 0) return de;
    std::string text = trim(std::string(bv->GetPointer(), bv->GetLength())), out, item;
    std::stringstream ss(text);
    bool first = true;
    while (std::getline(ss, item, '\\')) {
        item = trim(item);
        out += (first ? "" : "\\") + (item.empty() ? item : new_uid(c, item));
        first = false;
    }
    return with_value(de, gdcm::VR::UI, out);
}

// A sequence with every item's data set anonymized; false when de cannot be read as one.
bool anonymize_sequence(const gdcm::DataElement &de, anon_ctx &c, int depth,
                        gdcm::DataElement *out) {
    gdcm::SmartPointer<gdcm::SequenceOfItems> sq = de.GetValueAsSQ();
    if (!sq) return false;
    gdcm::SmartPointer<gdcm::SequenceOfItems> nsq = new gdcm::SequenceOfItems;
    nsq->SetLengthToUndefined();
    for (gdcm::SequenceOfItems::SizeType i = 1; i <= sq->GetNumberOfItems(); i++) {
        gdcm::Item item;
        item.SetVLToUndefined();
        item.SetNestedDataSet(anonymize_set(sq->GetItem(i).GetNestedDataSet(), c, depth + 1));
        nsq->AddItem(item);
    }
    *out = gdcm::DataElement(de.GetTag());
    out->SetVR(gdcm::VR::SQ);
    out->SetValue(*nsq);
    out->SetVLToUndefined();
    return true;
}

// Applies the profile to one data set (and, through sequences, to every nested one).
gdcm::DataSet anonymize_set(const gdcm::DataSet &in, anon_ctx &c, int depth) {
    gdcm::DataSet out;
    const auto &table = profile();
    for (const gdcm::DataElement &de : in.GetDES()) {
        const gdcm::Tag &t = de.GetTag();
        uint16_t g = t.GetGroup(), e = t.GetElement();
        if (t.IsPrivate() || e == 0x0000) continue; // private tags, group lengths
        if ((g & 0xff00) == 0x5000) continue;       // curve data (retired)
        if ((g & 0xff01) == 0x6000 && (e == 0x3000 || e == 0x4000))
            continue; // overlay data, comments
        auto it = table.find((uint32_t)g << 16 | e);
        if (it != table.end()) {
            if (it->second == EMPTY) out.Insert(emptied(de));
            continue;
        }
        gdcm::VR vr = de.GetVR();
        if (vr == gdcm::VR::INVALID || vr == gdcm::VR::UN) vr = dict_vr(t);
        if (t == kPixelData) {
            out.Insert(even(de, vr));
            continue;
        }
        if (t == gdcm::Tag(0x0010, 0x0020)) { // Patient ID: 16 hex digits of its keyed hash
            std::string id;
            const gdcm::ByteValue *bv = de.GetByteValue();
            if (bv) id = trim(std::string(bv->GetPointer(), bv->GetLength()));
            uint8_t h[MT_SHA256_BYTES];
            char hex[2 * MT_SHA256_BYTES + 1];
            if (id.empty() || !hmac(c, id, h)) {
                out.Insert(emptied(de));
                continue;
            }
            mt_hex(h, MT_SHA256_BYTES, hex);
            out.Insert(with_value(de, vr, std::string(hex, 16)));
            continue;
        }
        bool parsed_sq =
            !de.IsEmpty() && dynamic_cast<const gdcm::SequenceOfItems *>(&de.GetValue());
        if (vr == gdcm::VR::SQ || parsed_sq) {
            if (de.IsEmpty()) {
                out.Insert(de);
                continue;
            }
            // An explicit-VR UN holding a sequence would be re-read with the wrong encoding: drop.
            gdcm::DataElement sq;
            bool readable = parsed_sq || (c.implicit && de.GetVR() != gdcm::VR::UN);
            if (depth < 32 && readable && anonymize_sequence(de, c, depth, &sq)) out.Insert(sq);
            continue;
        }
        if (vr == gdcm::VR::UI) {
            out.Insert(is_class_uid(t) ? de : remap_uids(de, c));
            continue;
        }
        if (vr == gdcm::VR::PN || vr == gdcm::VR::DA || vr == gdcm::VR::DT || vr == gdcm::VR::TM) {
            out.Insert(emptied(de)); // names, dates and times not in the table
            continue;
        }
        out.Insert(even(de, vr));
    }
    return out;
}

// The de-identification record of PS3.15 E.1.1 (and PS3.16 CID 7050 code 113100).
void add_deid_record(gdcm::DataSet &ds) {
    set_text(ds, 0x0012, 0x0062, "YES");
    set_text(ds, 0x0012, 0x0063, "medtrain: PS3.15 basic profile, keyed UIDs");
    gdcm::Item item;
    item.SetVLToUndefined();
    gdcm::DataSet &code = item.GetNestedDataSet();
    set_text(code, 0x0008, 0x0100, "113100");
    set_text(code, 0x0008, 0x0102, "DCM");
    set_text(code, 0x0008, 0x0104, "Basic Application Confidentiality Profile");
    gdcm::SmartPointer<gdcm::SequenceOfItems> sq = new gdcm::SequenceOfItems;
    sq->SetLengthToUndefined();
    sq->AddItem(item);
    gdcm::DataElement de(gdcm::Tag(0x0012, 0x0064));
    de.SetVR(gdcm::VR::SQ);
    de.SetValue(*sq);
    de.SetVLToUndefined();
    ds.Replace(de);
}

mt_status anonymize(const char *src, const char *dst, const uint8_t *key, size_t key_n) {
    gdcm_quiet();
    layout lay;
    MT_TRY(check_structure(src, false, &lay));
    if (lay.has_pixels && !lay.encapsulated && lay.pixel_available < lay.pixel_vl)
        return mt_fail(MT_ERR_FORMAT, "%s: pixel data is %llu bytes, expected %llu: truncated?",
                       src, (unsigned long long)lay.pixel_available,
                       (unsigned long long)lay.pixel_vl);
    gdcm::Reader r;
    r.SetFileName(src);
    if (!r.Read()) return gdcm_failure(src);
    const gdcm::File &in = r.GetFile();
    gdcm::TransferSyntax ts = in.GetHeader().GetDataSetTransferSyntax();
    std::string sop_class;
    if (!get_text(in.GetDataSet(), gdcm::Tag(0x0008, 0x0016), &sop_class))
        return lay.part10 ? mt_fail(MT_ERR_FORMAT, "%s: no SOP Class UID (0008,0016)", src)
                          : mt_fail(MT_ERR_FORMAT, "%s: not a DICOM file", src);
    if (ts != gdcm::TransferSyntax::ImplicitVRLittleEndian && !ts.IsExplicit())
        return mt_fail(MT_ERR_UNSUPPORTED, "%s: transfer syntax %s cannot be written back", src,
                       ts.IsValid() ? uid_name(gdcm::TransferSyntax::GetTSString(ts)).c_str()
                                    : "unknown");

    anon_ctx c;
    c.key = key, c.key_n = key_n;
    c.implicit = ts.IsImplicit();
    gdcm::Writer w;
    gdcm::DataSet ds = anonymize_set(in.GetDataSet(), c, 0);
    if (c.st != MT_OK) return mt_error_wrap(c.st, "%s: ", src);
    add_deid_record(ds);
    w.GetFile().SetDataSet(ds);
    // A fresh File Meta Information: gdcm::Writer fills it from the new data set, so the media
    // storage SOP instance UID is the new SOP instance UID and nothing else from the old one stays.
    w.GetFile().GetHeader().SetDataSetTransferSyntax(ts);
    return write_file(dst, w);
}

} // namespace

extern "C" mt_status mt_dicom_anonymize(const char *src, const char *dst, const uint8_t *key,
                                        size_t key_n) {
    if (!src || !dst || !key) return mt_fail(MT_ERR_ARG, "mt_dicom_anonymize: NULL argument");
    if (key_n < 16)
        return mt_fail(MT_ERR_ARG, "mt_dicom_anonymize: key of %zu bytes (need 16+)", key_n);
    return guarded(src, "anonymizing", [&] { return anonymize(src, dst, key, key_n); });
}
