/** A route's name: the one it is given, else `mx<i>` or `route<i>` by its place in `routes`. */
export function routeName(route: { name?: string; mx?: boolean }, index: number): string {
  return route.name ?? `${route.mx ? "mx" : "route"}${index}`;
}
