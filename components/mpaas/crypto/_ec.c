/* ECDSA P-256 and SM2 signature verification for keys that are used many times.
 *
 * Both verifications compute u1·G + u2·Q for a fixed generator G and an app's
 * fixed public key Q. Each point gets a table of signed multiples
 * d·2^(6i)·P (d = 1..32, i = 0..42, affine), so a verification is 86 mixed
 * point additions and no doubling; the x coordinate is compared in Jacobian
 * form, so there is no field inversion either. Field and scalar arithmetic is
 * Montgomery multiplication over four 64-bit limbs. OpenSSL 3.0 has no
 * SM2-specific arithmetic on x86-64; its generic code takes ~4x longer
 * (docs/benchmarks.md).
 *
 * Everything here works on public data (keys, signatures, digests), so
 * nothing needs to be constant-time. Tests compare every answer with
 * OpenSSL's own verify (components/tests/test_fixedbase.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef uint64_t u64;
typedef unsigned __int128 u128;
typedef struct { u64 v[4]; } u256; /* little-endian limbs */

typedef struct {
    u256 m;     /* an odd modulus above 2^255 */
    u64 minv;   /* -m^-1 mod 2^64 */
    u256 one;   /* R mod m, R = 2^256 */
    u256 r2;    /* R^2 mod m */
} Mod;

typedef struct { u256 x, y; } Affine;            /* Montgomery form */
typedef struct { u256 x, y, z; int inf; } Jacobian; /* Montgomery form */

#define WINDOW 6
#define WINDOWS 43 /* ceil(257 / 6): a scalar below n, recoded to signed digits */
#define HALF (1 << (WINDOW - 1))
#define TABLE_POINTS (WINDOWS * HALF)

typedef struct {
    const char *name;
    Mod p, n;
    u256 b;          /* curve coefficient b, Montgomery form (a = -3 on both curves) */
    Affine g;        /* the generator, Montgomery form */
    Affine *g_table; /* built on first use */
    int sm2;         /* SM2's verification rule, else ECDSA's */
} Curve;

/* ---- 256-bit integers ---- */

static int is_zero(const u256 *a) { return (a->v[0] | a->v[1] | a->v[2] | a->v[3]) == 0; }

static int eq(const u256 *a, const u256 *b) {
    return ((a->v[0] ^ b->v[0]) | (a->v[1] ^ b->v[1]) | (a->v[2] ^ b->v[2]) | (a->v[3] ^ b->v[3])) == 0;
}

static int ge(const u256 *a, const u256 *b) {
    for (int i = 3; i >= 0; i--)
        if (a->v[i] != b->v[i]) return a->v[i] > b->v[i];
    return 1;
}

static u64 add256(u256 *r, const u256 *a, const u256 *b) {
    u128 c = 0;
    for (int i = 0; i < 4; i++) {
        c += (u128)a->v[i] + b->v[i];
        r->v[i] = (u64)c;
        c >>= 64;
    }
    return (u64)c;
}

static u64 sub256(u256 *r, const u256 *a, const u256 *b) {
    u64 borrow = 0;
    for (int i = 0; i < 4; i++) {
        u64 ai = a->v[i], bi = b->v[i];
        u64 d = ai - bi - borrow;
        borrow = (ai < bi) | ((ai == bi) & borrow);
        r->v[i] = d;
    }
    return borrow;
}

static void from_be(u256 *r, const unsigned char *b, Py_ssize_t len) { /* len <= 32 */
    memset(r, 0, sizeof *r);
    for (Py_ssize_t i = 0; i < len; i++) {
        Py_ssize_t bit = (len - 1 - i) * 8;
        r->v[bit / 64] |= (u64)b[i] << (bit % 64);
    }
}

static int from_hex(u256 *r, const char *hex) { /* exactly 64 hex digits */
    unsigned char b[32];
    for (int i = 0; i < 32; i++) {
        unsigned int byte;
        if (sscanf(hex + 2 * i, "%2x", &byte) != 1) return 0;
        b[i] = (unsigned char)byte;
    }
    from_be(r, b, 32);
    return 1;
}

/* ---- arithmetic mod m (inputs and results below m) ---- */

static void mod_add(u256 *r, const u256 *a, const u256 *b, const Mod *M) {
    u64 carry = add256(r, a, b);
    if (carry || ge(r, &M->m)) sub256(r, r, &M->m);
}

static void mod_sub(u256 *r, const u256 *a, const u256 *b, const Mod *M) {
    if (sub256(r, a, b)) add256(r, r, &M->m);
}

/* a·b·R^-1 mod m (CIOS), fully reduced. Needs a < m; b may be anything below 2^256. */
static void mont_mul(u256 *r, const u256 *a, const u256 *b, const Mod *M) {
    u64 t[6] = {0};
    const u64 *m = M->m.v;
    for (int i = 0; i < 4; i++) {
        u128 c = 0;
        u64 bi = b->v[i];
        for (int j = 0; j < 4; j++) {
            c += (u128)a->v[j] * bi + t[j];
            t[j] = (u64)c;
            c >>= 64;
        }
        c += t[4];
        t[4] = (u64)c;
        t[5] = (u64)(c >> 64);
        u64 q = t[0] * M->minv;
        c = (u128)q * m[0] + t[0];
        c >>= 64;
        for (int j = 1; j < 4; j++) {
            c += (u128)q * m[j] + t[j];
            t[j - 1] = (u64)c;
            c >>= 64;
        }
        c += t[4];
        t[3] = (u64)c;
        t[4] = t[5] + (u64)(c >> 64);
    }
    u256 out = {{t[0], t[1], t[2], t[3]}};
    if (t[4] || ge(&out, &M->m)) sub256(&out, &out, &M->m);
    *r = out;
}

static void mont_sqr(u256 *r, const u256 *a, const Mod *M) { mont_mul(r, a, a, M); }

static void to_mont(u256 *r, const u256 *a, const Mod *M) { mont_mul(r, a, &M->r2, M); }

/* a^-1 in Montgomery form (a != 0): a^(m-2), four bits at a time. */
static void mont_inv(u256 *r, const u256 *a, const Mod *M) {
    u256 e, two = {{2, 0, 0, 0}}, pow[16], acc = M->one;
    sub256(&e, &M->m, &two);
    pow[0] = M->one;
    for (int i = 1; i < 16; i++) mont_mul(&pow[i], &pow[i - 1], a, M);
    for (int i = 63; i >= 0; i--) {
        for (int k = 0; k < 4; k++) mont_sqr(&acc, &acc, M);
        unsigned d = (unsigned)(e.v[i / 16] >> ((i % 16) * 4)) & 15;
        if (d) mont_mul(&acc, &acc, &pow[d], M);
    }
    *r = acc;
}

static void shift_right(u256 *a, u64 top) { /* a = (top·2^256 + a) / 2 */
    for (int i = 0; i < 3; i++) a->v[i] = (a->v[i] >> 1) | (a->v[i + 1] << 63);
    a->v[3] = (a->v[3] >> 1) | (top << 63);
}

static void halve(u256 *x, const Mod *M) { /* x/2 mod m */
    u64 top = 0;
    if (x->v[0] & 1) top = add256(x, x, &M->m);
    shift_right(x, top);
}

/* a^-1 mod m in plain form, 0 < a < m, m prime: binary extended Euclid (~3x faster than a^(m-2) here;
 * variable time, public values only). Invariants: x1·a = u, x2·a = v (mod m). */
static void plain_inv(u256 *r, const u256 *a, const Mod *M) {
    u256 u = *a, v = M->m, x1 = {{1, 0, 0, 0}}, x2 = {{0}};
    const u256 one = {{1, 0, 0, 0}};
    while (!eq(&u, &one) && !eq(&v, &one)) {
        while (!(u.v[0] & 1)) { shift_right(&u, 0); halve(&x1, M); }
        while (!(v.v[0] & 1)) { shift_right(&v, 0); halve(&x2, M); }
        if (ge(&u, &v)) { sub256(&u, &u, &v); mod_sub(&x1, &x1, &x2, M); }
        else { sub256(&v, &v, &u); mod_sub(&x2, &x2, &x1, M); }
    }
    *r = eq(&u, &one) ? x1 : x2;
}

static void mod_init(Mod *M, const char *hex) {
    from_hex(&M->m, hex);
    u64 inv = 1; /* Newton: inv = m^-1 mod 2^64 */
    for (int i = 0; i < 6; i++) inv *= 2 - M->m.v[0] * inv;
    M->minv = (u64)0 - inv;
    u256 zero = {{0}};
    sub256(&M->one, &zero, &M->m); /* 2^256 - m = R mod m, as m > 2^255 */
    u256 x = M->one;
    for (int i = 0; i < 256; i++) mod_add(&x, &x, &x, M); /* R·2^256 */
    M->r2 = x;
}

/* ---- points on y^2 = x^3 - 3x + b ---- */

static void point_double(Jacobian *r, const Jacobian *a, const Mod *F) {
    /* dbl-2001-b */
    u256 delta, gamma, beta, alpha, t1, t2;
    if (a->inf || is_zero(&a->y)) { r->inf = 1; return; }
    mont_sqr(&delta, &a->z, F);
    mont_sqr(&gamma, &a->y, F);
    mont_mul(&beta, &a->x, &gamma, F);
    mod_sub(&t1, &a->x, &delta, F);
    mod_add(&t2, &a->x, &delta, F);
    mont_mul(&alpha, &t1, &t2, F);
    mod_add(&t1, &alpha, &alpha, F);
    mod_add(&alpha, &t1, &alpha, F);
    mod_add(&t1, &a->y, &a->z, F);
    mont_sqr(&t1, &t1, F);
    mod_sub(&t1, &t1, &gamma, F);
    mod_sub(&r->z, &t1, &delta, F);
    mod_add(&beta, &beta, &beta, F);
    mod_add(&beta, &beta, &beta, F); /* 4·beta */
    mont_sqr(&t1, &alpha, F);
    mod_add(&t2, &beta, &beta, F);
    mod_sub(&r->x, &t1, &t2, F);
    mod_sub(&t1, &beta, &r->x, F);
    mont_mul(&t1, &alpha, &t1, F);
    mont_sqr(&gamma, &gamma, F);
    mod_add(&gamma, &gamma, &gamma, F);
    mod_add(&gamma, &gamma, &gamma, F);
    mod_add(&gamma, &gamma, &gamma, F); /* 8·gamma^2 */
    mod_sub(&r->y, &t1, &gamma, F);
    r->inf = 0;
}

/* The end both additions share: X3 = r^2 - J - 2V, Y3 = r·(V - X3) - 2·yj (yj: Y1·J or S1·J). */
static void finish_add(Jacobian *out, const u256 *r, const u256 *j, const u256 *v, const u256 *yj, const Mod *F) {
    u256 t, yj2;
    mont_sqr(&t, r, F);
    mod_sub(&t, &t, j, F);
    mod_sub(&t, &t, v, F);
    mod_sub(&out->x, &t, v, F);
    mod_sub(&t, v, &out->x, F);
    mont_mul(&t, r, &t, F);
    mod_add(&yj2, yj, yj, F);
    mod_sub(&out->y, &t, &yj2, F);
    out->inf = 0;
}

/* r = a + (bx, by), b affine and not infinity; r may be a. */
static void point_add_affine(Jacobian *r, const Jacobian *a, const u256 *bx, const u256 *by, const Mod *F) {
    /* madd-2007-bl */
    u256 z1z1, u2, s2, h, hh, i, j, rr, v, t;
    if (a->inf) {
        r->x = *bx; r->y = *by; r->z = F->one; r->inf = 0;
        return;
    }
    mont_sqr(&z1z1, &a->z, F);
    mont_mul(&u2, bx, &z1z1, F);
    mont_mul(&s2, by, &a->z, F);
    mont_mul(&s2, &s2, &z1z1, F);
    mod_sub(&h, &u2, &a->x, F);
    mod_sub(&rr, &s2, &a->y, F);
    if (is_zero(&h)) {
        if (is_zero(&rr)) point_double(r, a, F);
        else r->inf = 1;
        return;
    }
    mont_sqr(&hh, &h, F);
    mod_add(&i, &hh, &hh, F);
    mod_add(&i, &i, &i, F);
    mont_mul(&j, &h, &i, F);
    mod_add(&rr, &rr, &rr, F);
    mont_mul(&v, &a->x, &i, F);
    mod_add(&t, &a->z, &h, F);
    mont_sqr(&t, &t, F);
    mod_sub(&t, &t, &z1z1, F);
    mod_sub(&r->z, &t, &hh, F);
    mont_mul(&s2, &a->y, &j, F); /* Y1·J, before Y3 may overwrite Y1 */
    finish_add(r, &rr, &j, &v, &s2, F);
}

/* r = a + b, both Jacobian (table building only). */
static void point_add(Jacobian *r, const Jacobian *a, const Jacobian *b, const Mod *F) {
    /* add-2007-bl */
    u256 z1z1, z2z2, u1, u2, s1, s2, h, i, j, rr, v, t;
    if (a->inf) { *r = *b; return; }
    if (b->inf) { *r = *a; return; }
    mont_sqr(&z1z1, &a->z, F);
    mont_sqr(&z2z2, &b->z, F);
    mont_mul(&u1, &a->x, &z2z2, F);
    mont_mul(&u2, &b->x, &z1z1, F);
    mont_mul(&s1, &a->y, &b->z, F);
    mont_mul(&s1, &s1, &z2z2, F);
    mont_mul(&s2, &b->y, &a->z, F);
    mont_mul(&s2, &s2, &z1z1, F);
    mod_sub(&h, &u2, &u1, F);
    mod_sub(&rr, &s2, &s1, F);
    if (is_zero(&h)) {
        if (is_zero(&rr)) point_double(r, a, F);
        else r->inf = 1;
        return;
    }
    mod_add(&i, &h, &h, F);
    mont_sqr(&i, &i, F);
    mont_mul(&j, &h, &i, F);
    mod_add(&rr, &rr, &rr, F);
    mont_mul(&v, &u1, &i, F);
    mod_add(&t, &a->z, &b->z, F);
    mont_sqr(&t, &t, F);
    mod_sub(&t, &t, &z1z1, F);
    mod_sub(&t, &t, &z2z2, F);
    mont_mul(&r->z, &t, &h, F);
    mont_mul(&s1, &s1, &j, F);
    finish_add(r, &rr, &j, &v, &s1, F);
}

/* table[i·HALF + d-1] = d·2^(6i)·P in affine form. NULL when out of memory. */
static Affine *build_table(const Affine *p, const Mod *F) {
    Jacobian *jac = PyMem_RawMalloc(sizeof(Jacobian) * TABLE_POINTS);
    u256 *prefix = PyMem_RawMalloc(sizeof(u256) * TABLE_POINTS);
    Affine *table = PyMem_RawMalloc(sizeof(Affine) * TABLE_POINTS);
    if (!jac || !prefix || !table) {
        PyMem_RawFree(jac); PyMem_RawFree(prefix); PyMem_RawFree(table);
        return NULL;
    }
    Jacobian base = {p->x, p->y, F->one, 0};
    for (int i = 0; i < WINDOWS; i++) {
        Jacobian *row = jac + i * HALF;
        row[0] = base;
        point_double(&row[1], &base, F);
        for (int d = 2; d < HALF; d++) point_add(&row[d], &row[d - 1], &base, F);
        point_double(&base, &row[HALF - 1], F); /* 64·2^(6i)·P = 2^(6(i+1))·P */
    }
    /* None is infinity: d·2^(6i) has no prime factor above 31, so it is never a multiple of the (prime) order.
     * All go affine with one inversion (Montgomery's trick). */
    prefix[0] = jac[0].z;
    for (int k = 1; k < TABLE_POINTS; k++) mont_mul(&prefix[k], &prefix[k - 1], &jac[k].z, F);
    u256 inv, zinv, z2, z3;
    mont_inv(&inv, &prefix[TABLE_POINTS - 1], F);
    for (int k = TABLE_POINTS - 1; k >= 0; k--) {
        if (k > 0) {
            mont_mul(&zinv, &inv, &prefix[k - 1], F);
            mont_mul(&inv, &inv, &jac[k].z, F);
        } else {
            zinv = inv;
        }
        mont_sqr(&z2, &zinv, F);
        mont_mul(&z3, &z2, &zinv, F);
        mont_mul(&table[k].x, &jac[k].x, &z2, F);
        mont_mul(&table[k].y, &jac[k].y, &z3, F);
    }
    PyMem_RawFree(jac);
    PyMem_RawFree(prefix);
    return table;
}

/* k (< 2^256) as WINDOWS signed digits in [-31, 32]: k = sum of digits[i]·2^(6i). */
static void recode(int *digits, const u256 *k) {
    int carry = 0;
    for (int i = 0; i < WINDOWS; i++) {
        int bit = i * WINDOW, limb = bit / 64, shift = bit % 64;
        u64 w = k->v[limb] >> shift;
        if (shift > 64 - WINDOW && limb < 3) w |= k->v[limb + 1] << (64 - shift);
        int d = (int)(w & ((1 << WINDOW) - 1)) + carry;
        carry = d > HALF;
        digits[i] = carry ? d - (1 << WINDOW) : d;
    }
}

/* acc += k·P for P's table. */
static void add_multiple(Jacobian *acc, const Affine *table, const u256 *k, const Mod *F) {
    int digits[WINDOWS];
    recode(digits, k);
    for (int i = 0; i < WINDOWS; i++) {
        int d = digits[i];
        if (d == 0) continue;
        const Affine *e = &table[i * HALF + (d > 0 ? d : -d) - 1];
        if (d > 0) {
            point_add_affine(acc, acc, &e->x, &e->y, F);
        } else {
            u256 neg_y;
            mod_sub(&neg_y, &(u256){{0}}, &e->y, F);
            point_add_affine(acc, acc, &e->x, &neg_y, F);
        }
    }
}

/* Whether the affine x of a (not infinity), taken mod n, is x_mod_n: as n < p < 2n, x is x_mod_n or
 * x_mod_n + n (when that is below p). Compared as X = x·Z^2, which needs no inversion. */
static int x_matches(const Jacobian *a, const u256 *x_mod_n, const Curve *c) {
    u256 z2, cand = *x_mod_n, m, t;
    mont_sqr(&z2, &a->z, &c->p);
    for (int round = 0; round < 2; round++) {
        if (round == 1 && (add256(&cand, &cand, &c->n.m) || ge(&cand, &c->p.m))) break;
        to_mont(&m, &cand, &c->p);
        mont_mul(&t, &m, &z2, &c->p);
        if (eq(&t, &a->x)) return 1;
    }
    return 0;
}

/* ---- DER: SEQUENCE { INTEGER r, INTEGER s }, strictly encoded ---- */

static int der_integer(const unsigned char *b, Py_ssize_t len, Py_ssize_t *pos, u256 *out) {
    Py_ssize_t at = *pos;
    if (at + 2 > len || b[at] != 0x02) return 0;
    Py_ssize_t n = b[at + 1];
    at += 2;
    if (n < 1 || n > 33 || at + n > len) return 0;
    if (b[at] & 0x80) return 0;                              /* negative */
    if (n > 1 && b[at] == 0 && !(b[at + 1] & 0x80)) return 0; /* not minimal */
    if (b[at] == 0) { at++; n--; }
    if (n > 32) return 0;
    from_be(out, b + at, n);
    *pos = at + n;
    return 1;
}

static int der_signature(const unsigned char *b, Py_ssize_t len, u256 *r, u256 *s) {
    /* At most 72 bytes, so the length is in short form. */
    if (len < 8 || len > 72 || b[0] != 0x30 || b[1] != len - 2) return 0;
    Py_ssize_t pos = 2;
    return der_integer(b, len, &pos, r) && der_integer(b, len, &pos, s) && pos == len;
}

/* ---- verification ---- */

static int in_scalar_range(const u256 *k, const Curve *c) { return !is_zero(k) && !ge(k, &c->n.m); }

/* GB/T 32918.2 §7.1: t = r + s mod n, (x1, y1) = s·G + t·Q, valid when (e + x1) mod n = r. */
static int verify_sm2(const Curve *c, const Affine *q_table, const u256 *e_in, const u256 *r, const u256 *s) {
    const Mod *N = &c->n;
    u256 t, e = *e_in, want;
    mod_add(&t, r, s, N);
    if (is_zero(&t)) return 0;
    if (ge(&e, &N->m)) sub256(&e, &e, &N->m); /* e < 2^256 < 2n */
    mod_sub(&want, r, &e, N);                  /* (e + x1) mod n = r  <=>  x1 mod n = r - e mod n */
    Jacobian acc = {.inf = 1};
    add_multiple(&acc, c->g_table, s, &c->p);
    add_multiple(&acc, q_table, &t, &c->p);
    return !acc.inf && x_matches(&acc, &want, c);
}

/* SEC 1 §4.1.4: w = s^-1, (x1, y1) = (e·w)·G + (r·w)·Q, valid when x1 mod n = r. */
static int verify_ecdsa(const Curve *c, const Affine *q_table, const u256 *e_in, const u256 *r, const u256 *s) {
    const Mod *N = &c->n;
    u256 e = *e_in, w, u1, u2, t;
    if (ge(&e, &N->m)) sub256(&e, &e, &N->m);
    plain_inv(&t, s, N);
    to_mont(&w, &t, N);       /* s^-1·R */
    mont_mul(&u1, &e, &w, N); /* e·s^-1 (plain form) */
    mont_mul(&u2, r, &w, N);
    Jacobian acc = {.inf = 1};
    add_multiple(&acc, c->g_table, &u1, &c->p);
    add_multiple(&acc, q_table, &u2, &c->p);
    return !acc.inf && x_matches(&acc, r, c);
}

/* ---- curves ---- */

static Curve curves[2] = {
    {.name = "P-256", .sm2 = 0},
    {.name = "SM2", .sm2 = 1},
};

static const char *curve_hex[2][5] = {
    /* p, n, b, Gx, Gy */
    {"FFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF",
     "FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551",
     "5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B",
     "6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296",
     "4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5"},
    {"FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF",
     "FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123",
     "28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93",
     "32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7",
     "BC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0"},
};

static void curve_init(Curve *c, const char *const hex[5]) {
    u256 t;
    mod_init(&c->p, hex[0]);
    mod_init(&c->n, hex[1]);
    from_hex(&t, hex[2]);
    to_mont(&c->b, &t, &c->p);
    from_hex(&t, hex[3]);
    to_mont(&c->g.x, &t, &c->p);
    from_hex(&t, hex[4]);
    to_mont(&c->g.y, &t, &c->p);
}

/* Parses an uncompressed point (0x04 || x || y) that lies on the curve, into Montgomery form. */
static int parse_point(Affine *out, const unsigned char *b, Py_ssize_t len, const Curve *c) {
    const Mod *F = &c->p;
    u256 x, y, lhs, rhs, t;
    if (len != 65 || b[0] != 0x04) return 0;
    from_be(&x, b + 1, 32);
    from_be(&y, b + 33, 32);
    if (ge(&x, &F->m) || ge(&y, &F->m)) return 0;
    to_mont(&out->x, &x, F);
    to_mont(&out->y, &y, F);
    mont_sqr(&lhs, &out->y, F);
    mont_sqr(&rhs, &out->x, F);
    mont_mul(&rhs, &rhs, &out->x, F); /* x^3 */
    mod_add(&t, &out->x, &out->x, F);
    mod_add(&t, &t, &out->x, F);
    mod_sub(&rhs, &rhs, &t, F);
    mod_add(&rhs, &rhs, &c->b, F);
    return eq(&lhs, &rhs); /* the cofactor is 1: on the curve means in the group */
}

/* ---- the Python type ---- */

typedef struct {
    PyObject_HEAD
    const Curve *curve;
    Affine *table;
} KeyObject;

static void Key_dealloc(KeyObject *self) {
    PyMem_RawFree(self->table);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Key_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"curve", "point", NULL};
    const char *name;
    Py_buffer point;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "sy*:Key", kwlist, &name, &point)) return NULL;
    Curve *c = NULL;
    for (int i = 0; i < 2; i++)
        if (strcmp(name, curves[i].name) == 0) c = &curves[i];
    Affine q;
    if (c == NULL) {
        PyErr_Format(PyExc_ValueError, "unknown curve %s (P-256 or SM2)", name);
    } else if (!parse_point(&q, point.buf, point.len, c)) {
        PyErr_SetString(PyExc_ValueError, "not an uncompressed point on the curve");
        c = NULL;
    }
    PyBuffer_Release(&point);
    if (c == NULL) return NULL;
    if (c->g_table == NULL && (c->g_table = build_table(&c->g, &c->p)) == NULL) return PyErr_NoMemory();
    KeyObject *self = (KeyObject *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->curve = c;
    if ((self->table = build_table(&q, &c->p)) == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    return (PyObject *)self;
}

static PyObject *Key_verify(KeyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyBytes_Check(args[0]) || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "verify(digest: bytes, signature: bytes)");
        return NULL;
    }
    if (PyBytes_GET_SIZE(args[0]) != 32) {
        PyErr_SetString(PyExc_ValueError, "the digest must be 32 bytes");
        return NULL;
    }
    u256 e, r, s;
    from_be(&e, (const unsigned char *)PyBytes_AS_STRING(args[0]), 32);
    if (!der_signature((const unsigned char *)PyBytes_AS_STRING(args[1]), PyBytes_GET_SIZE(args[1]), &r, &s)
        || !in_scalar_range(&r, self->curve) || !in_scalar_range(&s, self->curve))
        Py_RETURN_FALSE;
    const Curve *c = self->curve;
    int ok = c->sm2 ? verify_sm2(c, self->table, &e, &r, &s) : verify_ecdsa(c, self->table, &e, &r, &s);
    return PyBool_FromLong(ok);
}

static PyObject *Key_get_curve(KeyObject *self, void *Py_UNUSED(closure)) { return PyUnicode_FromString(self->curve->name); }

static PyMethodDef Key_methods[] = {
    {"verify", (PyCFunction)(void (*)(void))Key_verify, METH_FASTCALL,
     "verify(digest, signature) -> bool: a DER signature over a 32-byte digest (SHA-256 for P-256, "
     "SM3(Z || message) for SM2)."},
    {NULL},
};

static PyGetSetDef Key_getset[] = {
    {"curve", (getter)Key_get_curve, NULL, "P-256 or SM2", NULL},
    {NULL},
};

static PyTypeObject KeyType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mpaas.crypto._ec.Key",
    .tp_doc = "Key(curve, point): a public key (uncompressed point) with precomputed multiples, 86 KiB.",
    .tp_basicsize = sizeof(KeyObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Key_new,
    .tp_dealloc = (destructor)Key_dealloc,
    .tp_methods = Key_methods,
    .tp_getset = Key_getset,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_ec", "Table-backed ECDSA P-256 and SM2 verification (see the source's opening comment).", -1,
};

PyMODINIT_FUNC PyInit__ec(void) {
    for (int i = 0; i < 2; i++) curve_init(&curves[i], curve_hex[i]);
    if (PyType_Ready(&KeyType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "Key", (PyObject *)&KeyType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
