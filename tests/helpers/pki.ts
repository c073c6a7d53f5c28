/**
 * Test PKI built with the `openssl` CLI at test time: a CA and leaves (RSA or ECDSA) with chosen names and
 * validity dates (`openssl ca -startdate/-enddate`, so expired and not-yet-valid certificates work on
 * OpenSSL 3.0). Everything lives in one temp dir; call `cleanup()` in a finally block.
 */

/** Key algorithm of a generated key. */
export type KeyType = "rsa" | "ec";

/** Options for one issued certificate. */
export interface IssueOptions {
  /** Subject CN */
  cn: string;
  /** DNS subjectAltNames (none when omitted or empty) */
  dns?: string[];
  /** IP address subjectAltNames */
  ips?: string[];
  /** Key type, "ec" (P-256) by default because it is fast to generate */
  keyType?: KeyType;
  /** Validity start, `openssl ca` form YYYYMMDDHHMMSSZ; default one day ago */
  startDate?: string;
  /** Validity end, YYYYMMDDHHMMSSZ; default thirty days ahead */
  endDate?: string;
  /** Issue an intermediate CA certificate instead of a leaf */
  ca?: boolean;
}

/** Files of one issued certificate. */
export interface Issued {
  /** The certificate alone (PEM) */
  certFile: string;
  /** The certificate followed by its issuer chain up to (not including) the root (PEM) */
  chainFile: string;
  /** The private key (PEM) */
  keyFile: string;
  /** The certificate in DER */
  der: Uint8Array;
}

/** A CA able to issue leaves and sub-CAs. */
export interface TestCa {
  /** The CA certificate (PEM) */
  certFile: string;
  keyFile: string;
  /** The CA certificate in DER */
  der: Uint8Array;
  /** Issues a certificate signed by this CA */
  issue(opts: IssueOptions): Promise<Issued>;
  /** A DER OCSP response ("good") for a certificate this CA issued, signed by the CA (`openssl ocsp`) */
  ocspResponse(certFile: string): Promise<Uint8Array>;
}

/** A temp-dir PKI with its root CA. */
export interface TestPki extends TestCa {
  dir: string;
  /** Creates another, unrelated root CA in the same dir */
  newRoot(cn: string): Promise<TestCa>;
  /** Removes the temp dir */
  cleanup(): Promise<void>;
}

/** A Ferry config's `tls` section that serves `leaf` (its chain and key) as the only certificate. */
export function ferryTls(leaf: Pick<Issued, "chainFile" | "keyFile">): {
  certificates: { cert: string; key: string }[];
} {
  return { certificates: [{ cert: leaf.chainFile, key: leaf.keyFile }] };
}

/** Formats a date as `openssl ca` wants it (YYYYMMDDHHMMSSZ). */
export function caDate(d: Date): string {
  return d.toISOString().replace(/[-:T]/g, "").slice(0, 14) + "Z";
}

async function openssl(args: string[], cwd: string): Promise<void> {
  const out = await new Deno.Command("openssl", { args, cwd, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`openssl ${args[0]} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
}

async function genKey(path: string, type: KeyType, cwd: string): Promise<void> {
  const args = type === "rsa"
    ? ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", path]
    : ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path];
  await openssl(args, cwd);
}

async function pemToDer(pemFile: string, cwd: string): Promise<Uint8Array> {
  const derFile = pemFile + ".der";
  await openssl(["x509", "-in", pemFile, "-outform", "DER", "-out", derFile], cwd);
  return await Deno.readFile(`${cwd}/${derFile}`);
}

let seq = 0;

async function makeCa(
  dir: string,
  name: string,
  certFile: string,
  keyFile: string,
  chainAbove: string,
): Promise<TestCa> {
  const caDir = `${dir}/${name}.db`;
  await Deno.mkdir(caDir, { recursive: true });
  await Deno.writeTextFile(`${caDir}/index.txt`, "");
  await Deno.writeTextFile(
    `${caDir}/serial`,
    (0x100000 + Math.floor(Math.random() * 0xe00000)).toString(16) + "00\n",
  );
  await Deno.writeTextFile(
    `${caDir}/ca.cnf`,
    [
      "[ca]",
      "default_ca = d",
      "[d]",
      `dir = ${caDir}`,
      "database = $dir/index.txt",
      "serial = $dir/serial",
      `new_certs_dir = ${caDir}`,
      `certificate = ${dir}/${certFile}`,
      `private_key = ${dir}/${keyFile}`,
      "default_md = sha256",
      "policy = p",
      "unique_subject = no",
      "copy_extensions = none",
      "[p]",
      "commonName = supplied",
      "",
    ].join("\n"),
  );
  const der = await pemToDer(certFile, dir);
  // `openssl ca` rewrites its serial and index files: one signing at a time per CA.
  let queue: Promise<unknown> = Promise.resolve();
  const serial = <T>(fn: () => Promise<T>): Promise<T> => {
    const next = queue.then(fn, fn);
    queue = next.catch(() => {});
    return next;
  };
  return {
    certFile: `${dir}/${certFile}`,
    keyFile: `${dir}/${keyFile}`,
    der,
    async ocspResponse(leaf: string): Promise<Uint8Array> {
      const id = `o${++seq}`;
      const ca = `${dir}/${certFile}`;
      await openssl(["ocsp", "-issuer", ca, "-cert", leaf, "-no_nonce", "-reqout", `${id}.req`], dir);
      await openssl([
        "ocsp",
        "-index",
        `${caDir}/index.txt`,
        "-CA",
        ca,
        "-rsigner",
        ca,
        "-rkey",
        `${dir}/${keyFile}`,
        "-reqin",
        `${id}.req`,
        "-respout",
        `${id}.resp`,
        "-ndays",
        "1",
      ], dir);
      return await Deno.readFile(`${dir}/${id}.resp`);
    },
    async issue(opts: IssueOptions): Promise<Issued> {
      const id = `c${++seq}`;
      const key = `${id}.key`, csr = `${id}.csr`, crt = `${id}.crt`, ext = `${id}.ext`;
      await genKey(key, opts.keyType ?? "ec", dir);
      await openssl(["req", "-new", "-key", key, "-subj", `/CN=${opts.cn}`, "-out", csr], dir);
      const lines = ["[v3]"];
      if (opts.ca) {
        lines.push("basicConstraints = critical, CA:TRUE", "keyUsage = critical, keyCertSign, cRLSign");
      } else {
        lines.push("basicConstraints = CA:FALSE", "extendedKeyUsage = serverAuth, clientAuth");
      }
      const sans = [...(opts.dns ?? []).map((d) => `DNS:${d}`), ...(opts.ips ?? []).map((i) => `IP:${i}`)];
      if (sans.length) lines.push("subjectAltName = " + sans.join(", "));
      await Deno.writeTextFile(`${dir}/${ext}`, lines.join("\n") + "\n");
      const now = Date.now();
      await serial(() =>
        openssl([
          "ca",
          "-batch",
          "-notext",
          "-config",
          `${caDir}/ca.cnf`,
          "-in",
          csr,
          "-out",
          crt,
          "-extfile",
          ext,
          "-extensions",
          "v3",
          "-startdate",
          opts.startDate ?? caDate(new Date(now - 86400_000)),
          "-enddate",
          opts.endDate ?? caDate(new Date(now + 30 * 86400_000)),
        ], dir)
      );
      const pem = await Deno.readTextFile(`${dir}/${crt}`);
      const chain = `${id}.chain.pem`;
      await Deno.writeTextFile(`${dir}/${chain}`, pem + chainAbove);
      const issued: Issued = {
        certFile: `${dir}/${crt}`,
        chainFile: `${dir}/${chain}`,
        keyFile: `${dir}/${key}`,
        der: await pemToDer(crt, dir),
      };
      if (opts.ca) {
        const sub = await makeCa(dir, id, crt, key, pem + chainAbove);
        return Object.assign(issued, { subCa: sub });
      }
      return issued;
    },
  };
}

async function makeRoot(dir: string, cn: string): Promise<TestCa> {
  const id = `root${++seq}`;
  await genKey(`${id}.key`, "ec", dir);
  await openssl([
    "req",
    "-x509",
    "-new",
    "-key",
    `${id}.key`,
    "-subj",
    `/CN=${cn}`,
    "-days",
    "30",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
    "-out",
    `${id}.crt`,
  ], dir);
  return await makeCa(dir, id, `${id}.crt`, `${id}.key`, "");
}

/** Creates a temp dir with a root CA named "Ferry Test CA". */
export async function createPki(): Promise<TestPki> {
  const dir = await Deno.makeTempDir({ prefix: "ferry-pki-" });
  const root = await makeRoot(dir, "Ferry Test CA");
  return {
    ...root,
    dir,
    newRoot: (cn: string) => makeRoot(dir, cn),
    cleanup: () => Deno.remove(dir, { recursive: true }),
  };
}

/** Issues an intermediate CA under `ca` and returns it as a CA able to issue further certificates. */
export async function issueIntermediate(ca: TestCa, cn: string): Promise<TestCa & Issued> {
  const issued = await ca.issue({ cn, ca: true }) as Issued & { subCa: TestCa };
  return { ...issued.subCa, ...issued, issue: issued.subCa.issue };
}
