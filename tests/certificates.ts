// A throw-away CA, server certificate and client certificate made by
// openssl, for the TLS tests.
/** The output of `openssl version`, or `null` when openssl cannot be run. */
async function opensslVersion(): Promise<string | null> {
  try {
    const { success, stdout } = await new Deno.Command("openssl", {
      args: ["version"],
      stdout: "piped",
      stderr: "null",
    }).output();
    return success ? new TextDecoder().decode(stdout).trim() : null;
  } catch {
    return null;
  }
}

/** `openssl version`, or `null` when openssl cannot be run (tests skip). */
export const OPENSSL: string | null = await opensslVersion();

/** A throw-away CA and a server certificate for 127.0.0.1 and localhost. */
export interface Certificates extends AsyncDisposable {
  /** The CA certificate, PEM. */
  ca: string;
  caFile: string;
  /** The server's certificate chain, PEM. */
  cert: string;
  certFile: string;
  /** The server's private key, PEM. */
  key: string;
  keyFile: string;
  /** A client certificate the CA signed (CN "pklock-node"), PEM. */
  clientCertFile: string;
  /** Its private key, PEM. */
  clientKeyFile: string;
  dir: string;
}

async function openssl(dir: string, args: string[]): Promise<void> {
  const { success, stderr } = await new Deno.Command("openssl", {
    args,
    cwd: dir,
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!success) {
    throw new Error(
      `openssl ${args.join(" ")} failed: ${new TextDecoder().decode(stderr)}`,
    );
  }
}

/**
 * Makes a throw-away CA, a certificate it signs for 127.0.0.1 and localhost
 * (usable as a client certificate too, as etcd's gateway presents it to its
 * own gRPC server under `--client-cert-auth`), and a client certificate, in a
 * temporary folder removed on disposal.
 *
 * @returns The PEM texts and their files.
 */
export async function makeCertificates(): Promise<Certificates> {
  const dir = await Deno.makeTempDir({ prefix: "pklock-tls-" });
  try {
    const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    await openssl(dir, [
      "req",
      "-x509",
      ...ec,
      "-nodes",
      "-days",
      "1",
      "-subj",
      "/CN=pklock test CA",
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
      "-keyout",
      "ca.key",
      "-out",
      "ca.pem",
    ]);
    await openssl(dir, [
      "req",
      ...ec,
      "-nodes",
      "-subj",
      "/CN=localhost",
      "-keyout",
      "key.pem",
      "-out",
      "server.csr",
    ]);
    await Deno.writeTextFile(
      `${dir}/server.ext`,
      "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n" +
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n",
    );
    await openssl(dir, [
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
      "1",
      "-extfile",
      "server.ext",
      "-out",
      "cert.pem",
    ]);
    await signed(
      dir,
      "client",
      "/CN=pklock-node",
      "extendedKeyUsage=clientAuth",
    );
    const read = (name: string) => Deno.readTextFile(`${dir}/${name}`);
    return {
      dir,
      ca: await read("ca.pem"),
      caFile: `${dir}/ca.pem`,
      cert: await read("cert.pem"),
      certFile: `${dir}/cert.pem`,
      key: await read("key.pem"),
      keyFile: `${dir}/key.pem`,
      clientCertFile: `${dir}/client.pem`,
      clientKeyFile: `${dir}/client.key`,
      [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
    };
  } catch (error) {
    await Deno.remove(dir, { recursive: true });
    throw error;
  }
}

/** Makes `<name>.key` and `<name>.pem`, signed by the CA in `dir`. */
async function signed(
  dir: string,
  name: string,
  subject: string,
  extension: string,
): Promise<void> {
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
  await openssl(dir, [
    "req",
    ...ec,
    "-nodes",
    "-subj",
    subject,
    "-keyout",
    `${name}.key`,
    "-out",
    `${name}.csr`,
  ]);
  await Deno.writeTextFile(`${dir}/${name}.ext`, `${extension}\n`);
  await openssl(dir, [
    "x509",
    "-req",
    "-in",
    `${name}.csr`,
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-days",
    "1",
    "-extfile",
    `${name}.ext`,
    "-out",
    `${name}.pem`,
  ]);
}
