// @ts-check
/** The live event feed: `GET /api/v1/events/stream` read with fetch (so the token goes in a
 * header, never in a URL), parsed as server-sent events, handed to every subscriber.
 * Reconnects by itself from the last event it saw, with a growing delay; shows its state
 * in the header ("live" or "reconnecting"). */
import { API } from "./api.js";
import { SseParser } from "./format.js";

/** @typedef {{id: number, at: string, kind: string, vm: string | null, node: string | null, task_id: string | null, message: string, data: Record<string, any>, actor: string | null}} BollardEvent */

export class Live {
  /**
   * @param {string} token
   * @param {HTMLElement} indicator
   */
  constructor(token, indicator) {
    this.token = token;
    this.indicator = indicator;
    /** @type {Set<(e: BollardEvent) => void>} */
    this.listeners = new Set();
    /** @type {number | null} */
    this.last = null;
    this.controller = new AbortController();
    this.stopped = false;
  }

  /**
   * @param {(e: BollardEvent) => void} fn
   * @returns {() => void} unsubscribe
   */
  subscribe(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  start() {
    void this.run();
  }

  stop() {
    this.stopped = true;
    this.controller.abort();
  }

  /** @param {string} text @param {string} state */
  show(text, state) {
    this.indicator.hidden = false;
    this.indicator.textContent = text;
    this.indicator.dataset.state = state;
  }

  async run() {
    let delay = 1000;
    while (!this.stopped) {
      try {
        await this.once();
        delay = 1000; // the stream ended normally (its time was up): reconnect at once
      } catch (err) {
        if (this.stopped) return;
        this.show("reconnecting", "down");
        await new Promise((resolve) => setTimeout(resolve, delay + Math.random() * 500));
        delay = Math.min(delay * 2, 15000);
        void err;
      }
    }
  }

  async once() {
    const url = new URL(API + "/events/stream", window.location.origin);
    if (this.last !== null) url.searchParams.set("after", String(this.last));
    const response = await fetch(url, {
      headers: { Authorization: `Bearer ${this.token}`, Accept: "text/event-stream" },
      signal: this.controller.signal,
      cache: "no-store",
    });
    if (!response.ok || !response.body) throw new Error(`event stream: ${response.status}`);
    this.show("live", "up");
    // Whatever happened while the stream was down: listeners refresh what they show.
    this.emit({ id: this.last ?? 0, at: new Date().toISOString(), kind: "stream.connected", vm: null, node: null, task_id: null, message: "", data: {}, actor: null });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    const parser = new SseParser();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      for (const message of parser.feed(value)) {
        if (message.event !== "event") continue;
        /** @type {BollardEvent} */
        const event = JSON.parse(message.data);
        this.last = event.id;
        this.emit(event);
      }
    }
  }

  /** @param {BollardEvent} event */
  emit(event) {
    for (const fn of this.listeners) {
      try {
        fn(event);
      } catch (err) {
        console.error("event listener failed", err);
      }
    }
  }
}
