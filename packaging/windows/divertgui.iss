; Inno Setup script for the Windows installer of divertgui.
;
; Input: the one-folder bundle that `pyinstaller --noconfirm packaging\pyinstaller.spec`
; builds on Windows into dist\divertgui\ (divertgui.exe, divert.exe, _internal\ with
; pydivert's WinDivert64.dll and WinDivert64.sys). Build from the repository root:
;   iscc packaging\windows\divertgui.iss
; Output: dist\divertgui-<version>-setup.exe

#define AppName "divertgui"
#define AppVersion "0.1.0"
#define AppPublisher "divertgui contributors"
#define Root "..\.."

[Setup]
AppId={{6C1E4F0A-7D3B-4E59-9A41-3D2B8F5C9E11}
AppName={#AppName}
AppVersion={#AppVersion}
AppPublisher={#AppPublisher}
DefaultDirName={autopf}\{#AppName}
DefaultGroupName={#AppName}
; WinDivert64.sys is a kernel driver: only a 64-bit install can load it.
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
; Installing into Program Files and registering the capture shortcut needs
; Administrator rights once; the GUI itself then runs unelevated.
PrivilegesRequired=admin
OutputDir={#Root}\dist
OutputBaseFilename={#AppName}-{#AppVersion}-setup
SetupIconFile={#Root}\resources\icons\divertgui.ico
UninstallDisplayIcon={app}\divertgui.exe
Compression=lzma2/max
SolidCompression=yes
WizardStyle=modern
ChangesEnvironment=yes

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked
Name: "addtopath"; Description: "Add divert.exe to the PATH"; GroupDescription: "Command line:"; Flags: unchecked

[Files]
Source: "{#Root}\dist\divertgui\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{group}\divertgui"; Filename: "{app}\divertgui.exe"; WorkingDir: "{userdocs}"
; Started through the elevating launcher below: Windows asks for consent and the GUI can capture.
Name: "{group}\divertgui (capture)"; Filename: "{sys}\WindowsPowerShell\v1.0\powershell.exe"; \
    Parameters: "-NoProfile -WindowStyle Hidden -Command Start-Process -Verb RunAs -FilePath '{app}\divertgui.exe'"; \
    IconFilename: "{app}\divertgui.exe"; WorkingDir: "{userdocs}"
Name: "{group}\divert command prompt"; Filename: "{cmd}"; Parameters: "/k cd /d ""{app}"" && divert.exe --help"; \
    WorkingDir: "{app}"
Name: "{group}\Uninstall divertgui"; Filename: "{uninstallexe}"
Name: "{autodesktop}\divertgui"; Filename: "{app}\divertgui.exe"; Tasks: desktopicon

[Registry]
Root: HKLM; Subkey: "SYSTEM\CurrentControlSet\Control\Session Manager\Environment"; ValueType: expandsz; \
    ValueName: "Path"; ValueData: "{olddata};{app}"; Tasks: addtopath; Check: NeedsAddPath(ExpandConstant('{app}'))

[Run]
Filename: "{app}\divertgui.exe"; Parameters: "--demo"; Description: "Start divertgui on its demo traffic"; \
    Flags: nowait postinstall skipifsilent unchecked

[UninstallRun]
; The WinDivert driver service stays loaded while any handle is open and is
; removed by Windows at the next reboot otherwise; stop it now so the
; driver file can be deleted with the rest.
Filename: "{sys}\sc.exe"; Parameters: "stop WinDivert"; Flags: runhidden; RunOnceId: "StopWinDivert"

[UninstallDelete]
Type: filesandordirs; Name: "{app}"

[Code]
function NeedsAddPath(Dir: string): Boolean;
var
  Current: string;
begin
  if not RegQueryStringValue(HKEY_LOCAL_MACHINE,
      'SYSTEM\CurrentControlSet\Control\Session Manager\Environment', 'Path', Current) then
  begin
    Result := True;
    exit;
  end;
  Result := Pos(';' + Uppercase(Dir) + ';', ';' + Uppercase(Current) + ';') = 0;
end;

procedure RemoveFromPath(Dir: string);
var
  Current: string;
  P: Integer;
begin
  if RegQueryStringValue(HKEY_LOCAL_MACHINE,
      'SYSTEM\CurrentControlSet\Control\Session Manager\Environment', 'Path', Current) then
  begin
    P := Pos(';' + Uppercase(Dir), Uppercase(Current));
    if P > 0 then
    begin
      Delete(Current, P, Length(Dir) + 1);
      RegWriteExpandStringValue(HKEY_LOCAL_MACHINE,
        'SYSTEM\CurrentControlSet\Control\Session Manager\Environment', 'Path', Current);
    end;
  end;
end;

procedure CurUninstallStepChanged(CurUninstallStep: TUninstallStep);
begin
  if CurUninstallStep = usPostUninstall then
    RemoveFromPath(ExpandConstant('{app}'));
end;
