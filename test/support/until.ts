// Bounded wait on a condition a server reaches on its own (a scrape timer, a cancellation that
// arrives as another socket event): polls every few ms, false after `ms`.
export async function until(cond: () => boolean, ms = 3000): Promise<boolean> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 5));
  }
  return true;
}
