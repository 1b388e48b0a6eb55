// io/text/tok_spm_shim.cc — the C++ side of io/text/tok_spm.c: a thin C ABI over
// libsentencepiece's SentencePieceProcessor (Debian libsentencepiece-dev).
// Every entry point catches exceptions; none escapes into C.
#include <sentencepiece_processor.h>

#include <cstdio>
#include <cstring>
#include <new>
#include <string>
#include <vector>

extern "C" {
#include "tok_spm_shim.h"
}

namespace {
void set_err(char *err, size_t n, const std::string &msg) { std::snprintf(err, n, "%s", msg.c_str()); }
}  // namespace

extern "C" void *sp_spm_shim_load(const char *buf, int64_t len, char *err, size_t errn) {
    try {
        auto *p = new sentencepiece::SentencePieceProcessor();
        auto st = p->LoadFromSerializedProto(std::string(buf, static_cast<size_t>(len)));
        if (!st.ok()) {
            set_err(err, errn, st.ToString());
            delete p;
            return nullptr;
        }
        return p;
    } catch (const std::exception &e) {
        set_err(err, errn, e.what());
    } catch (...) {
        set_err(err, errn, "unknown exception");
    }
    return nullptr;
}

extern "C" void sp_spm_shim_free(void *h) { delete static_cast<sentencepiece::SentencePieceProcessor *>(h); }

extern "C" int sp_spm_shim_encode(void *h, const char *s, int64_t n, int (*push)(void *, int32_t), void *ctx, char *err,
                                  size_t errn) {
    try {
        auto *p = static_cast<sentencepiece::SentencePieceProcessor *>(h);
        thread_local std::vector<int> ids;
        ids.clear();
        auto st = p->Encode(std::string_view(s, static_cast<size_t>(n)), &ids);
        if (!st.ok()) {
            set_err(err, errn, st.ToString());
            return -1;
        }
        for (int id : ids)
            if (push(ctx, id)) return 1;
        return 0;
    } catch (const std::exception &e) {
        set_err(err, errn, e.what());
    } catch (...) {
        set_err(err, errn, "unknown exception");
    }
    return -1;
}

extern "C" int sp_spm_shim_decode(void *h, const int32_t *ids, int64_t n, int skip_control,
                                  int (*append)(void *, const char *, int64_t), void *ctx, char *err, size_t errn) {
    try {
        auto *p = static_cast<sentencepiece::SentencePieceProcessor *>(h);
        std::vector<int> v;
        v.reserve(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; i++)
            if (!(skip_control && p->IsControl(ids[i]))) v.push_back(ids[i]);
        std::string out;
        auto st = p->Decode(v, &out);
        if (!st.ok()) {
            set_err(err, errn, st.ToString());
            return -1;
        }
        return append(ctx, out.data(), static_cast<int64_t>(out.size())) ? 1 : 0;
    } catch (const std::exception &e) {
        set_err(err, errn, e.what());
    } catch (...) {
        set_err(err, errn, "unknown exception");
    }
    return -1;
}

extern "C" void sp_spm_shim_info(void *h, int64_t *vocab, int32_t *bos, int32_t *eos, int32_t *unk) {
    auto *p = static_cast<sentencepiece::SentencePieceProcessor *>(h);
    *vocab = p->GetPieceSize();
    *bos = p->bos_id();
    *eos = p->eos_id();
    *unk = p->unk_id();
}

extern "C" int32_t sp_spm_shim_piece_id(void *h, const char *piece) {
    auto *p = static_cast<sentencepiece::SentencePieceProcessor *>(h);
    int id = p->PieceToId(piece);
    return id == p->unk_id() && std::strcmp(piece, p->IdToPiece(id).c_str()) != 0 ? -1 : id;
}
