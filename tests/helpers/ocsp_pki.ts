/**
 * Test OCSP PKI built with the `openssl` CLI: a CA kept with `openssl ca` and an index.txt (so certificates
 * can be revoked), delegated OCSP signer certificates, leaves whose AIA names a loopback responder, offline
 * responses (`openssl ocsp -reqin … -respout …`) and a live `openssl ocsp -port` responder.
 * Everything lives in one temp dir; call `cleanup()` in a finally block.
 */
import { caDate } from "./pki.ts";
import { freePort } from "./process.ts";

export { freePort };

/** Files of one certificate issued by the test CA. */
export interface OcspIssued {
  /** The certificate (PEM) */
  crt: string;
  /** Its private key (PEM) */
  key: string;
  /** The certificate followed by the CA certificate (PEM), as a server's certificate file */
  chain: string;
  /** The certificate in DER */
  der: Uint8Array;
}

/** Which extensions an issued certificate carries. */
export type OcspProfile = "leaf" | "ocsp-signer" | "no-eku";

/** Options for one issued certificate. */
export interface OcspIssueOptions {
  /** Extension profile; "leaf" (server certificate with AIA OCSP URL) by default */
  profile?: OcspProfile;
  /** Validity end; thirty days ahead by default */
  notAfter?: Date;
}

/** Options for an offline response. */
export interface OcspRespondOptions {
  /** Signing certificate and key; the delegated signer (`ocspSigner`) by default */
  signer?: { crt: string; key: string };
  /** nextUpdate = now + this many minutes (`-nmin`); 60 by default */
  nmin?: number;
  /** nextUpdate = now + this many days (`-ndays`); overrides nmin */
  ndays?: number;
}

/** A running `openssl ocsp` responder. */
export interface OcspResponder {
  stop(): Promise<void>;
}

/** A temp-dir CA with an OCSP index. */
export interface OcspPki {
  dir: string;
  /** The responder port named in leaves' AIA (nothing listens until `startResponder`) */
  port: number;
  /** The CA certificate (PEM) and key */
  caCrt: string;
  caKey: string;
  /** The CA certificate in DER */
  caDer: Uint8Array;
  /** The index.txt `openssl ca` keeps */
  index: string;
  /** A delegated OCSP signer (EKU OCSPSigning), valid thirty days */
  ocspSigner: OcspIssued;
  /** Issues a certificate signed by the CA */
  issue(cn: string, opts?: OcspIssueOptions): Promise<OcspIssued>;
  /** Marks a certificate revoked in the index */
  revoke(cert: OcspIssued): Promise<void>;
  /** Makes a DER response for a certificate offline, as the responder would */
  respond(cert: OcspIssued, opts?: OcspRespondOptions): Promise<Uint8Array>;
  /**
   * Starts `openssl ocsp -port` on `port` (signer `ocspSigner`, `-nmin 1`) and waits until it listens.
   * It reads the index once: issue and revoke before starting it (later certificates are "unknown").
   */
  startResponder(): Promise<OcspResponder>;
  /** Removes the temp dir */
  cleanup(): Promise<void>;
}

/** Runs a command and throws with its stderr when it fails. */
async function run(cmd: string, args: string[], cwd: string): Promise<void> {
  const out = await new Deno.Command(cmd, { args, cwd, stdin: "null", stdout: "piped", stderr: "piped" })
    .output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
}

function caConfig(dir: string, port: number): string {
  return `[ ca ]
default_ca = test_ca
[ test_ca ]
database = ${dir}/index.txt
new_certs_dir = ${dir}/newcerts
certificate = ${dir}/ca.crt
private_key = ${dir}/ca.key
serial = ${dir}/serial
default_md = sha256
default_days = 30
policy = policy_any
unique_subject = no
copy_extensions = none
[ policy_any ]
commonName = supplied
[ leaf ]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:mail.example.test
authorityInfoAccess = OCSP;URI:http://127.0.0.1:${port}
[ ocsp-signer ]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = OCSPSigning
[ no-eku ]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature
`;
}

/** Waits until something listens on TCP `port` (per `ss -ltn`), without connecting to it. */
async function waitListening(port: number, child: Deno.ChildProcess, deadlineMs = 5000): Promise<void> {
  const end = Date.now() + deadlineMs;
  let exited = false;
  child.status.then(() => exited = true);
  while (Date.now() < end) {
    const out = await new Deno.Command("ss", { args: ["-ltnH", `sport = :${port}`], stdout: "piped" })
      .output();
    if (new TextDecoder().decode(out.stdout).trim() !== "") return;
    if (exited) throw new Error("openssl ocsp exited before listening");
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`openssl ocsp did not listen on port ${port} within ${deadlineMs}ms`);
}

/** Creates a CA (RSA 2048) with an index, a delegated OCSP signer (P-256) and a responder port. */
export async function makeOcspPki(): Promise<OcspPki> {
  const dir = await Deno.makeTempDir({ prefix: "ferry-ocsp-pki-" });
  const port = freePort();
  await Deno.mkdir(`${dir}/newcerts`);
  await Deno.writeTextFile(`${dir}/index.txt`, "");
  await Deno.writeTextFile(`${dir}/serial`, "1000\n");
  await Deno.writeTextFile(`${dir}/ca.cnf`, caConfig(dir, port));
  await run("openssl", [
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    "ca.key",
    "-out",
    "ca.crt",
    "-subj",
    "/CN=Ferry OCSP Test CA",
    "-days",
    "30",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ], dir);
  const caPem = await Deno.readTextFile(`${dir}/ca.crt`);
  const caDer = pemToDer(caPem);
  let n = 0;

  const issue = async (cn: string, opts: OcspIssueOptions = {}): Promise<OcspIssued> => {
    const base = `${dir}/c${n++}`;
    await run("openssl", [
      "req",
      "-new",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-keyout",
      `${base}.key`,
      "-out",
      `${base}.csr`,
      "-subj",
      `/CN=${cn}`,
    ], dir);
    const notAfter = opts.notAfter ?? new Date(Date.now() + 30 * 86_400_000);
    await run("openssl", [
      "ca",
      "-batch",
      "-notext",
      "-config",
      "ca.cnf",
      "-extensions",
      opts.profile ?? "leaf",
      "-startdate",
      caDate(new Date(Date.now() - 86_400_000)),
      "-enddate",
      caDate(notAfter),
      "-in",
      `${base}.csr`,
      "-out",
      `${base}.crt`,
    ], dir);
    const pem = await Deno.readTextFile(`${base}.crt`);
    await Deno.writeTextFile(`${base}.chain.pem`, pem + caPem);
    return { crt: `${base}.crt`, key: `${base}.key`, chain: `${base}.chain.pem`, der: pemToDer(pem) };
  };

  const ocspSigner = await issue("Ferry OCSP Signer", { profile: "ocsp-signer" });

  const respond = async (cert: OcspIssued, opts: OcspRespondOptions = {}): Promise<Uint8Array> => {
    const base = `${dir}/r${n++}`;
    await run("openssl", [
      "ocsp",
      "-issuer",
      "ca.crt",
      "-cert",
      cert.crt,
      "-no_nonce",
      "-reqout",
      `${base}.req`,
    ], dir);
    const signer = opts.signer ?? ocspSigner;
    const validity = opts.ndays !== undefined ? ["-ndays", `${opts.ndays}`] : ["-nmin", `${opts.nmin ?? 60}`];
    await run("openssl", [
      "ocsp",
      "-index",
      "index.txt",
      "-CA",
      "ca.crt",
      "-rsigner",
      signer.crt,
      "-rkey",
      signer.key,
      "-reqin",
      `${base}.req`,
      "-respout",
      `${base}.der`,
      ...validity,
    ], dir);
    return await Deno.readFile(`${base}.der`);
  };

  const startResponder = async (): Promise<OcspResponder> => {
    const child = new Deno.Command("openssl", {
      args: [
        "ocsp",
        "-index",
        "index.txt",
        "-port",
        `${port}`,
        "-rsigner",
        ocspSigner.crt,
        "-rkey",
        ocspSigner.key,
        "-CA",
        "ca.crt",
        "-nmin",
        "1",
      ],
      cwd: dir,
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    try {
      await waitListening(port, child);
    } catch (e) {
      try {
        child.kill("SIGKILL");
      } catch { /* already gone */ }
      await child.status;
      throw e;
    }
    return {
      async stop() {
        try {
          child.kill("SIGKILL");
        } catch { /* already gone */ }
        await child.status;
      },
    };
  };

  return {
    dir,
    port,
    caCrt: `${dir}/ca.crt`,
    caKey: `${dir}/ca.key`,
    caDer,
    index: `${dir}/index.txt`,
    ocspSigner,
    issue,
    revoke: (cert) => run("openssl", ["ca", "-batch", "-config", "ca.cnf", "-revoke", cert.crt], dir),
    respond,
    startResponder,
    cleanup: () => Deno.remove(dir, { recursive: true }),
  };
}

/** Decodes the first PEM certificate of a text. */
export function pemToDer(pem: string): Uint8Array {
  const m = /-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/.exec(pem);
  if (!m) throw new Error("No PEM certificate found");
  return Uint8Array.fromBase64(m[1].replace(/\s+/g, ""));
}
