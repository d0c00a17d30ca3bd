/* Compiled like librdkafka with features ssl and libz: the OpenSSL and zlib headers and libraries. */
#include <openssl/ssl.h>
#include <openssl/crypto.h>
#include <zlib.h>
#include <stdio.h>

#include "probe.h"

const char* cairn_probe_versions(void) {
  static char buf[256];
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == NULL) return NULL;
  SSL_CTX_free(ctx);
  snprintf(buf, sizeof buf, "%s, zlib %s", OpenSSL_version(OPENSSL_VERSION), zlibVersion());
  return buf;
}
