export type Theme = "light" | "dark" | "system";

export function storedTheme(): Theme {
  const value = localStorage.getItem("nanoscale.theme");
  return value === "light" || value === "dark" ? value : "system";
}

export function applyTheme(theme: Theme): void {
  localStorage.setItem("nanoscale.theme", theme);
  if (theme === "system") delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = theme;
}
