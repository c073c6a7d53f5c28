/**
 * Test certificates for the STARTTLS benchmark, made with the openssl CLI: a throwaway CA and a server
 * certificate for `localhost` / 127.0.0.1 signed by it (X.509 v3 per RFC 5280: the CA has
 * basicConstraints CA:TRUE, the leaf CA:FALSE, serverAuth and subjectAltName, as rustls requires).
 * Trusts the local openssl binary; files go into the directory it is given.
 *
 * @module
 */

/** Files made by {@link makeCertificates}. */
export interface BenchCertificates {
  /** PEM of the CA certificate (what the load generator trusts). */
  caPem: string;
  /** Server certificate followed by the CA certificate (PEM). */
  chainFile: string;
  /** Server private key (PEM). */
  keyFile: string;
  /** Key type used, e.g. "rsa:2048" or "ec:P-256". */
  keyType: string;
  /** Name the server certificate is for (SNI and name check). */
  serverName: string;
}

async function openssl(args: string[], cwd: string): Promise<void> {
  const out = await new Deno.Command("openssl", {
    args,
    cwd,
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(30_000),
  }).output();
  if (out.code !== 0) {
    throw new Error(`openssl ${args[0]} failed: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
}

function keyArgs(keyType: string): string[] {
  if (keyType.startsWith("ec:")) {
    return ["-newkey", "ec", "-pkeyopt", `ec_paramgen_curve:${keyType.slice(3)}`];
  }
  return ["-newkey", keyType];
}

/** Creates a CA and a server certificate (default key type rsa:2048) in `dir`. */
export async function makeCertificates(
  dir: string,
  options: { keyType?: string } = {},
): Promise<BenchCertificates> {
  const keyType = options.keyType ?? "rsa:2048";
  const serverName = "localhost";
  await openssl([
    "req",
    "-x509",
    ...keyArgs(keyType),
    "-nodes",
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
    "-days",
    "2",
    "-subj",
    "/CN=Ferry bench CA",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ], dir);
  await openssl([
    "req",
    ...keyArgs(keyType),
    "-nodes",
    "-keyout",
    "server.key",
    "-out",
    "server.csr",
    "-subj",
    `/CN=${serverName}`,
  ], dir);
  await Deno.writeTextFile(
    `${dir}/server.ext`,
    [
      "basicConstraints=critical,CA:FALSE",
      `keyUsage=critical,digitalSignature${keyType.startsWith("rsa") ? ",keyEncipherment" : ""}`,
      "extendedKeyUsage=serverAuth",
      `subjectAltName=DNS:${serverName},IP:127.0.0.1`,
      "",
    ].join("\n"),
  );
  await openssl([
    "x509",
    "-req",
    "-in",
    "server.csr",
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-days",
    "2",
    "-extfile",
    "server.ext",
    "-out",
    "server.pem",
  ], dir);
  const caPem = await Deno.readTextFile(`${dir}/ca.pem`);
  const chainFile = `${dir}/chain.pem`;
  await Deno.writeTextFile(chainFile, (await Deno.readTextFile(`${dir}/server.pem`)) + caPem);
  // smtpd (user postfix) and Ferry both read the key; the bench dir is private to this run.
  await Deno.chmod(`${dir}/server.key`, 0o644);
  return { caPem, chainFile, keyFile: `${dir}/server.key`, keyType, serverName };
}
