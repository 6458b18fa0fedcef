import type { Schemas } from "./api/client";

type Point = Schemas["MetricsPoint"];

/** x and y with a null at every interval nothing reported, so an outage shows as a gap. */
export function withGaps(points: Point[], metric: { value: (p: Point) => number | null }, intervalSecs = 10): [number[], (number | null)[]] {
  const xs: number[] = [];
  const ys: (number | null)[] = [];
  for (const point of points) {
    const x = new Date(point.at).getTime() / 1000;
    const previous = xs[xs.length - 1];
    if (previous !== undefined) {
      for (let t = previous + intervalSecs; t < x && xs.length < 2000; t += intervalSecs) {
        xs.push(t);
        ys.push(null);
      }
    }
    xs.push(x);
    ys.push(metric.value(point));
  }
  return [xs, ys];
}

