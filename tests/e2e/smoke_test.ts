import assert from "node:assert/strict";
import { RawClient, withFerry } from "../helpers/ferry.ts";

Deno.test("a message to a relay domain is accepted, spooled with its envelope, and logged", async () => {
  await withFerry({}, async (f) => {
    const c = await RawClient.connect(f.port);
    try {
      assert.equal((await c.reply())?.code, 220);
      assert.equal((await c.cmd("EHLO client.test"))?.code, 250);
      assert.equal((await c.cmd("MAIL FROM:<a@sender.test>"))?.code, 250);
      assert.equal((await c.cmd("RCPT TO:<b@example.test>"))?.code, 250);
      assert.equal((await c.cmd("DATA"))?.code, 354);
      const r = await c.cmd("Subject: hi\r\n\r\nbody\r\n.");
      assert.equal(r?.code, 250);
      const id = /id=(\S+)/.exec(r!.text)![1];
      const env = await f.spool.get(id);
      assert.equal(env?.sender, "a@sender.test");
      assert.deepEqual(env?.recipients.map((x) => x.address), ["b@example.test"]);
      const data = new TextDecoder().decode(await f.spool.readData(id));
      assert.match(
        data,
        /^Received: from client\.test \(\[127\.0\.0\.1\]:\d+\)\r\n\tby ferry\.test \(Ferry\) with ESMTP/,
      );
      assert.ok(data.endsWith("Subject: hi\r\n\r\nbody\r\n"));
      assert.ok(f.memlog.has(`<= a@sender.test H=(client.test) [127.0.0.1]`));
    } finally {
      c.close();
    }
  });
});
