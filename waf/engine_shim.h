/* The C surface of engine_shim.cpp; waf/engine_build.py hands this same text to cffi's cdef. */
typedef struct ew_tx ew_tx;

typedef struct ew_match {
    int rule_id;
    int severity;
    int phase;
    int disruptive;
    const char *message;
    size_t message_len;
    const char *data;
    size_t data_len;
    const char *match;
    size_t match_len;
    const char *tags;
    size_t tags_len;
    const char *text;
    size_t text_len;
} ew_match;

void *ew_engine_new(const char *connector, int text);
const char *ew_engine_version(void *engine);
void ew_engine_free(void *engine);
void *ew_rules_new(void);
int ew_rules_add(void *rules, const char *text, int is_file, char **error);
void ew_rules_free(void *rules);
ew_tx *ew_tx_new(void *engine, void *rules, const char *id);
int ew_tx_request_headers(ew_tx *t, const char *client, int client_port, const char *server,
                          int server_port, const char *uri, const char *method, const char *version,
                          const unsigned char *headers, const size_t *lengths, size_t count);
int ew_tx_request_body(ew_tx *t, const unsigned char *body, size_t size, const char *path);
int ew_tx_response_headers(ew_tx *t, int status, const char *protocol, const unsigned char *headers,
                           const size_t *lengths, size_t count);
int ew_tx_response_body(ew_tx *t, const unsigned char *body, size_t size);
int ew_tx_logging(ew_tx *t);
int ew_tx_intervention(ew_tx *t, int *status);
size_t ew_tx_collect(ew_tx *t);
void ew_tx_match(ew_tx *t, size_t index, ew_match *out);
void ew_tx_free(ew_tx *t);
int ew_pcre2_jit(char *version, size_t size);
