import type { Schemas } from "../api/client";

/** Product name and logo from the white-labelling settings. */
export function Brand(props: { settings: Schemas["Settings"] | undefined }) {
  const name = props.settings?.product_name ?? "NanoScale";
  const logo = props.settings?.logo_url;
  return (
    <span className="brand">
      <img src={logo ?? "/favicon.svg"} alt="" width={28} height={28} />
      <span data-testid="product-name">{name}</span>
    </span>
  );
}
