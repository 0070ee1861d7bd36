// Server-Sent Events from fetch() bodies, parsed by eventsource-parser (vendored, see vendor/).
//
// EventSource cannot send an Authorization header and does not exist in
// extension service workers, so /tasks/<id>/events is read with fetch(). The
// parsing itself (line ends \n, \r\n or \r, split anywhere between reads;
// comments; multi-line data) is the maintained parser's; this module only
// adapts it: events carry { type, data, id } with the spec's defaults (type
// "message", the last id seen persisting across events).

import { createParser } from "../vendor/eventsource-parser/index.js";

export function createSseParser(onEvent) {
  let lastId = null;
  let endsWithCR = false;
  const parser = createParser({
    onEvent(event) {
      if (event.id !== undefined) lastId = event.id;
      onEvent({ type: event.event || "message", data: event.data, id: lastId });
    },
  });
  return {
    /** Feed decoded text; complete events are dispatched, a partial tail is kept. */
    push(text) {
      if (text) endsWithCR = text.endsWith("\r");
      parser.feed(text);
    },
    /** End of stream: an event without its blank line is dropped, as the spec says. */
    end() {
      // The parser holds a final \r in case a \n follows; at the end nothing will, so it ends its line.
      if (endsWithCR) parser.feed("\n");
      parser.reset();
    },
  };
}

/** Read a fetch Response body as SSE, calling onEvent for each event. Resolves at end of stream. */
export async function readSse(response, onEvent, signal) {
  const parser = createSseParser(onEvent);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  try {
    for (;;) {
      if (signal?.aborted) throw signal.reason ?? new Error("aborted");
      const { done, value } = await reader.read();
      if (done) break;
      parser.push(decoder.decode(value, { stream: true }));
    }
    parser.push(decoder.decode());
    parser.end();
  } finally {
    reader.releaseLock?.();
  }
}
