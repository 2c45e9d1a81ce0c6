/**
 * The clock of an unfinished frame: a peer that starts a frame has a bounded
 * time to finish it. A stream of frames that keeps arriving split across
 * reads is never cut off: each frame gets its own time.
 *
 * @module
 */

/** Times the frame a connection is inside of, if any. */
export class FrameClock {
  readonly #ms: number;
  readonly #expired: () => void;
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** Frames finished so far, to tell a frame that stalls from many. */
  #frames = 0;
  #framesAtStart = 0;

  /**
   * @param ms How long a frame may take.
   * @param expired Called when one frame took longer.
   */
  constructor(ms: number, expired: () => void) {
    this.#ms = ms;
    this.#expired = expired;
  }

  /** A frame was finished. */
  finished(): void {
    this.#frames++;
  }

  /**
   * A read was decoded.
   *
   * @param partial Whether it ended inside a frame.
   */
  read(partial: boolean): void {
    if (partial) this.#timer ??= this.#start();
    else if (this.#timer !== undefined) this.stop();
  }

  /** Stops the clock. */
  stop(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #start(): ReturnType<typeof setTimeout> {
    this.#framesAtStart = this.#frames;
    return setTimeout(() => {
      this.#timer = undefined;
      // Frames were finished since: the one under way now gets its own time.
      if (this.#frames !== this.#framesAtStart) this.#timer = this.#start();
      else this.#expired();
    }, this.#ms);
  }
}
