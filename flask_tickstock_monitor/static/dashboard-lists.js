// Keyed lists updated in place: a row per key is made once, updated when its item changed,
// moved only when out of order, removed when its key is gone. Never a whole-list rebuild.

export class KeyedList {
  /**
   * ``container``: the parent element (tbody, ol); ``key(item)``: a string; ``create(item)`` ->
   * element; ``update(node, item)`` refreshes it (called only when ``version(item)`` changed).
   */
  constructor(container, { key, create, update, version, shown, dispose }) {
    this.container = container;
    this.key = key;
    this.create = create;
    this.update = update;
    this.version = version || ((item) => item);
    // ``shown(node)``: false for a row out of sight, whose update then waits until it is seen
    // (see ``reveal``): off-screen rows cost nothing however often their item changes.
    this.shown = shown || (() => true);
    this.dispose = dispose || (() => {}); // a row is gone: free what it holds (charts, observers)
    this.rows = new Map(); // key -> { node, version, pending }
  }

  /**
   * Makes the container show ``items`` in this order. At most ``maxCreate`` new rows are made
   * per call (a storm's burst spread over a few frames): ``incomplete`` then says to call again.
   */
  sync(items, maxCreate = Infinity) {
    const wanted = new Set();
    let quota = maxCreate;
    this.incomplete = false;
    let cursor = this.container.firstElementChild;
    for (const item of items) {
      const key = this.key(item);
      if (wanted.has(key)) continue; // a duplicate key: the first wins
      wanted.add(key);
      const version = this.version(item);
      let row = this.rows.get(key);
      if (row === undefined) {
        if (quota <= 0) {
          wanted.delete(key);
          this.incomplete = true;
          continue;
        }
        quota -= 1;
        row = { node: this.create(item), version };
        row.node.dataset.key = key;
        this.rows.set(key, row);
      } else if (row.version !== version) {
        if (this.shown(row.node)) {
          row.version = version;
          row.pending = undefined;
          this.update(row.node, item);
        } else {
          row.pending = item;
        }
      }
      if (row.node === cursor) {
        cursor = cursor.nextElementSibling;
      } else {
        this.container.insertBefore(row.node, cursor);
      }
    }
    for (const [key, row] of this.rows) {
      if (!wanted.has(key)) {
        this.dispose(row.node);
        row.node.remove();
        this.rows.delete(key);
      }
    }
    return items.length;
  }

  /** A row came into sight: brings it up to date. */
  reveal(key) {
    const row = this.rows.get(key);
    if (row === undefined || row.pending === undefined) return;
    const item = row.pending;
    row.pending = undefined;
    row.version = this.version(item);
    this.update(row.node, item);
  }
}

/** A bounded map in insertion order: the oldest entries go first once ``limit`` is passed. */
export class BoundedMap extends Map {
  constructor(limit) {
    super();
    this.limit = limit;
  }

  set(key, value) {
    super.set(key, value);
    while (this.size > this.limit) this.delete(this.keys().next().value);
    return this;
  }
}
