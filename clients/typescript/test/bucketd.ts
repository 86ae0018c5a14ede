// The real bucketd for the tests: the binary CMake built ($BUCKETD_BIN, else the repo's build/
// dir), on a free loopback port, with a manual clock, on a data dir the test owns.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { once } from "node:events";

import { createBucketdClient, type BucketdClient } from "../src/index.js";

const here = path.dirname(fileURLToPath(import.meta.url));
export const BUCKETD_BIN =
  process.env["BUCKETD_BIN"] ?? path.resolve(here, "../../../../build/tools/bucketd/bucketd");
export const START = "2026-01-01T00:00:00Z";

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** A temp dir removed by `remove()`. */
export function tempDir(): { path: string; remove: () => void } {
  const dir = mkdtempSync(path.join(tmpdir(), "bucketd-ts-"));
  return { path: dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

export class Bucketd {
  private constructor(
    readonly port: number,
    private readonly child: ChildProcess,
  ) {}

  get baseUrl(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  client(): BucketdClient {
    return createBucketdClient({ baseUrl: this.baseUrl });
  }

  /** Starts bucketd on `dataDir` (a manual clock from START) and waits until /readyz is 200. */
  static async start(dataDir: string, port?: number): Promise<Bucketd> {
    if (!existsSync(BUCKETD_BIN)) throw new Error(`no bucketd at ${BUCKETD_BIN}: build bucketd_server`);
    for (let attempt = 0; attempt < 5; attempt++) {
      const chosen = port ?? (await freePort());
      const child = spawn(
        BUCKETD_BIN,
        ["--listen", `127.0.0.1:${chosen}`, "--data", dataDir, "--clock", "manual",
         "--start-time", START, "--log-level", "warn"],
        { stdio: ["ignore", "inherit", "inherit"] },
      );
      const server = new Bucketd(chosen, child);
      if (await server.waitReady()) return server;
      await server.stop();
    }
    throw new Error("bucketd did not become ready");
  }

  private async waitReady(): Promise<boolean> {
    for (let i = 0; i < 400; i++) {
      if (this.child.exitCode !== null) return false;
      try {
        const res = await fetch(`${this.baseUrl}/readyz`);
        if (res.status === 200) return true;
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 25));
    }
    return false;
  }

  /** SIGTERM, and waits for the process to exit. */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = once(this.child, "exit");
    this.child.kill("SIGTERM");
    await exited;
  }
}
