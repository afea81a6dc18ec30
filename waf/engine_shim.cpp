// Edgeward's binding of libmodsecurity: the C API for everything it covers, plus what it lacks.
//
// The C API reports matched rules only as formatted log lines, which carry attacker-chosen bytes
// (matched data, URI) between the fields and cannot be split back reliably; and it reports a
// disruptive rule's message only in the intervention's text, never to the log callback. This shim
// copies each of the transaction's rule messages (Transaction::m_rulesMessages, every rule that
// logs, disruptive or not) into plain byte fields that Python reads. It is compiled against the
// headers of the same Debian package whose library it links (libmodsecurity-dev, libmodsecurity3),
// so the layout it reads is the library's own.
//
// Every function here is called by cffi with the GIL released: nothing in this file touches Python.
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include <pcre2.h>

#include "modsecurity/intervention.h"
#include "modsecurity/modsecurity.h"
#include "modsecurity/rule_message.h"
#include "modsecurity/rules_set.h"
#include "modsecurity/transaction.h"

extern "C" {
#include "engine_shim.h"
}

using namespace modsecurity;  // the C API is declared inside the namespace when compiled as C++

namespace {

struct EwMatch {
    int rule_id;
    int severity;
    int phase;
    int disruptive;
    std::string message;
    std::string data;
    std::string match;
    std::string tags;  // joined with '\n'
    std::string text;  // the engine's own log line, only when the engine was asked for text
};

struct EwEngine {
    modsecurity::ModSecurity *msc;
    bool text;
};

}  // namespace

struct ew_tx {
    modsecurity::Transaction *tx;
    bool text;
    std::vector<EwMatch> matches;
};

namespace {

void ignore(void *, const void *) {
    // Matches are read from the transaction (ew_tx_collect); without a callback the engine would
    // print every match, matched data included, on stderr.
}

EwMatch copy(const RuleMessage &rm, bool text) {
    EwMatch m;
    m.rule_id = rm.m_ruleId;
    m.severity = rm.m_severity;
    m.phase = rm.m_phase;
    m.disruptive = rm.m_isDisruptive ? 1 : 0;
    m.message = rm.m_message;
    m.data = rm.m_data;
    m.match = rm.m_match;
    for (const auto &tag : rm.m_tags) {
        if (!m.tags.empty()) {
            m.tags.push_back('\n');
        }
        m.tags.append(tag);
    }
    if (text) {
        m.text = RuleMessage::log(&rm);
    }
    return m;
}

char *copy_error(const std::string &text) {
    char *out = static_cast<char *>(std::malloc(text.size() + 1));
    if (out != nullptr) {
        std::memcpy(out, text.c_str(), text.size() + 1);
    }
    return out;
}

}  // namespace

extern "C" {

void *ew_engine_new(const char *connector, int text) {
    auto *engine = new (std::nothrow) EwEngine{nullptr, text != 0};
    if (engine == nullptr) {
        return nullptr;
    }
    engine->msc = msc_init();
    msc_set_connector_info(engine->msc, connector);
    engine->msc->setServerLogCb(ignore, modsecurity::RuleMessageLogProperty);
    return engine;
}

const char *ew_engine_version(void *engine) {
    return msc_who_am_i(static_cast<EwEngine *>(engine)->msc);
}

void ew_engine_free(void *engine) {
    auto *e = static_cast<EwEngine *>(engine);
    msc_cleanup(e->msc);
    delete e;
}

void *ew_rules_new(void) {
    return msc_create_rules_set();
}

int ew_rules_add(void *rules, const char *text, int is_file, char **error) {
    const char *err = nullptr;
    auto *set = static_cast<modsecurity::RulesSet *>(rules);
    int count = is_file ? msc_rules_add_file(set, text, &err) : msc_rules_add(set, text, &err);
    if (count < 0) {
        *error = copy_error(err != nullptr ? err : "unknown parser error");
    }
    std::free(const_cast<char *>(err));
    return count;
}

void ew_rules_free(void *rules) {
    msc_rules_cleanup(static_cast<modsecurity::RulesSet *>(rules));
}

ew_tx *ew_tx_new(void *engine, void *rules, const char *id) {
    auto *e = static_cast<EwEngine *>(engine);
    auto *t = new (std::nothrow) ew_tx{nullptr, e->text, {}};
    if (t == nullptr) {
        return nullptr;
    }
    t->tx = msc_new_transaction_with_id(e->msc, static_cast<modsecurity::RulesSet *>(rules),
                                        const_cast<char *>(id), nullptr);
    return t;
}

int ew_tx_request_headers(ew_tx *t, const char *client, int client_port, const char *server,
                          int server_port, const char *uri, const char *method, const char *version,
                          const unsigned char *headers, const size_t *lengths, size_t count) {
    msc_process_connection(t->tx, client, client_port, server, server_port);
    msc_process_uri(t->tx, uri, method, version);
    const unsigned char *p = headers;
    for (size_t i = 0; i + 1 < count * 2; i += 2) {
        msc_add_n_request_header(t->tx, p, lengths[i], p + lengths[i], lengths[i + 1]);
        p += lengths[i] + lengths[i + 1];
    }
    return msc_process_request_headers(t->tx);
}

int ew_tx_request_body(ew_tx *t, const unsigned char *body, size_t size, const char *path) {
    if (path != nullptr) {
        msc_request_body_from_file(t->tx, path);
    } else if (size > 0) {
        msc_append_request_body(t->tx, body, size);
    }
    return msc_process_request_body(t->tx);
}

int ew_tx_response_headers(ew_tx *t, int status, const char *protocol, const unsigned char *headers,
                           const size_t *lengths, size_t count) {
    const unsigned char *p = headers;
    for (size_t i = 0; i + 1 < count * 2; i += 2) {
        msc_add_n_response_header(t->tx, p, lengths[i], p + lengths[i], lengths[i + 1]);
        p += lengths[i] + lengths[i + 1];
    }
    return msc_process_response_headers(t->tx, status, protocol);
}

int ew_tx_response_body(ew_tx *t, const unsigned char *body, size_t size) {
    if (size > 0) {
        msc_append_response_body(t->tx, body, size);
    }
    return msc_process_response_body(t->tx);
}

int ew_tx_logging(ew_tx *t) {
    return msc_process_logging(t->tx);
}

int ew_tx_intervention(ew_tx *t, int *status) {
    ModSecurityIntervention it;
    it.status = 200;
    it.pause = 0;
    it.url = nullptr;
    it.log = nullptr;
    it.disruptive = 0;
    int disruptive = msc_intervention(t->tx, &it);
    std::free(it.url);
    std::free(it.log);
    *status = it.status;
    return disruptive != 0 && it.disruptive != 0;
}

size_t ew_tx_collect(ew_tx *t) {
    t->matches.clear();
    try {
        for (const auto &rm : t->tx->m_rulesMessages) {
            t->matches.push_back(copy(rm, t->text));
        }
    } catch (...) {
        // out of memory while copying: the matches so far are kept, the request is not lost
    }
    return t->matches.size();
}

void ew_tx_match(ew_tx *t, size_t index, ew_match *out) {
    const EwMatch &m = t->matches[index];
    out->rule_id = m.rule_id;
    out->severity = m.severity;
    out->phase = m.phase;
    out->disruptive = m.disruptive;
    out->message = m.message.data();
    out->message_len = m.message.size();
    out->data = m.data.data();
    out->data_len = m.data.size();
    out->match = m.match.data();
    out->match_len = m.match.size();
    out->tags = m.tags.data();
    out->tags_len = m.tags.size();
    out->text = m.text.data();
    out->text_len = m.text.size();
}

void ew_tx_free(ew_tx *t) {
    msc_transaction_cleanup(t->tx);
    delete t;
}

int ew_pcre2_jit(char *version, size_t size) {
    uint32_t available = 0;
    pcre2_config(PCRE2_CONFIG_JIT, &available);
    pcre2_config(PCRE2_CONFIG_VERSION, version);  // needs 24 code units at most
    (void)size;
    if (!available) {
        return 0;
    }
    // JIT can be built in and still be refused at run time (no executable memory): compile one.
    int code = 0;
    PCRE2_SIZE offset = 0;
    pcre2_code *re = pcre2_compile(reinterpret_cast<PCRE2_SPTR>("a+b"), PCRE2_ZERO_TERMINATED, 0,
                                   &code, &offset, nullptr);
    if (re == nullptr) {
        return 0;
    }
    int rc = pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    pcre2_code_free(re);
    return rc == 0 ? 1 : 0;
}

}  // extern "C"
